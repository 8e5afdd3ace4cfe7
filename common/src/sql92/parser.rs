//! Recursive descent over the tokens, with SQL's precedence: OR < AND < NOT < predicates.

use super::lexer::Tok;
use super::{Cmp, Expr, Lit};

/// Nesting (parentheses and NOTs) allowed, so a hostile expression cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

pub struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

impl Parser {
    pub fn new(toks: Vec<Tok>) -> Self {
        Self {
            toks,
            pos: 0,
            depth: 0,
        }
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Kw(k)) if *k == kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), String> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(format!("expected {kw}, found {}", self.describe()))
        }
    }

    fn describe(&self) -> String {
        match self.peek() {
            None => "the end".into(),
            Some(t) => format!("{t:?}"),
        }
    }

    pub fn parse_all(mut self) -> Result<Expr, String> {
        let e = self.or()?;
        if self.pos < self.toks.len() {
            return Err(format!(
                "unexpected {} after the expression",
                self.describe()
            ));
        }
        Ok(e)
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.eat_kw("OR") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.not()?;
        while self.eat_kw("AND") {
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("expression nested deeper than {MAX_DEPTH} levels"));
        }
        let e = if self.eat_kw("NOT") {
            Expr::Not(Box::new(self.not()?))
        } else {
            self.predicate()?
        };
        self.depth -= 1;
        Ok(e)
    }

    fn predicate(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or()?;
            if self.next() != Some(Tok::RParen) {
                return Err("missing )".into());
            }
            return Ok(e);
        }
        let left = self.operand()?;
        if let Some(Tok::Op(op)) = self.peek().cloned() {
            self.pos += 1;
            let right = self.operand()?;
            let cmp = match op {
                "=" => Cmp::Eq,
                "<>" => Cmp::Ne,
                ">" => Cmp::Gt,
                ">=" => Cmp::Ge,
                "<" => Cmp::Lt,
                _ => Cmp::Le,
            };
            return Ok(Expr::Cmp(cmp, left, right));
        }
        if self.eat_kw("IS") {
            let negated = self.eat_kw("NOT");
            self.expect_kw("NULL")?;
            let e = Expr::IsNull(left);
            return Ok(if negated { Expr::Not(Box::new(e)) } else { e });
        }
        let negated = self.eat_kw("NOT");
        let e = if self.eat_kw("BETWEEN") {
            let lo = self.operand()?;
            self.expect_kw("AND")?;
            let hi = self.operand()?;
            Expr::Between(left, lo, hi)
        } else if self.eat_kw("IN") {
            if self.next() != Some(Tok::LParen) {
                return Err("IN needs a parenthesised list".into());
            }
            let mut items = Vec::new();
            loop {
                match self.next() {
                    Some(Tok::Str(s)) => items.push(s),
                    other => return Err(format!("IN lists strings, found {other:?}")),
                }
                match self.next() {
                    Some(Tok::Comma) => continue,
                    Some(Tok::RParen) => break,
                    other => return Err(format!("expected , or ) in IN, found {other:?}")),
                }
            }
            Expr::In(left, items)
        } else if let Some(kind) = ["CONTAINS", "STARTSWITH", "ENDSWITH"]
            .into_iter()
            .find(|k| self.eat_kw(k))
        {
            match self.next() {
                Some(Tok::Str(s)) => Expr::Text(kind, left, s),
                other => return Err(format!("{kind} needs a string, found {other:?}")),
            }
        } else {
            return Err(format!(
                "expected a comparison after {left:?}, found {}",
                self.describe()
            ));
        };
        Ok(if negated { Expr::Not(Box::new(e)) } else { e })
    }

    fn operand(&mut self) -> Result<Lit, String> {
        match self.next() {
            Some(Tok::Ident(n)) => Ok(Lit::Prop(n)),
            Some(Tok::Str(s)) => Ok(Lit::Str(s)),
            Some(Tok::Int(n)) => Ok(Lit::Int(n)),
            Some(Tok::Float(f)) => Ok(Lit::Float(f)),
            Some(Tok::Kw("TRUE")) => Ok(Lit::Bool(true)),
            Some(Tok::Kw("FALSE")) => Ok(Lit::Bool(false)),
            Some(Tok::Kw("NULL")) => Ok(Lit::Null),
            other => Err(format!("expected a property or a literal, found {other:?}")),
        }
    }
}
