//! SQL92 message filters as RocketMQ defines them (`FilterExpressionType.SQL92`): comparisons
//! (`= <> > >= < <=`), `[NOT] BETWEEN … AND …`, `[NOT] IN ('a', 'b')`, `IS [NOT] NULL`,
//! `[NOT] CONTAINS | STARTSWITH | ENDSWITH 'x'`, `AND`, `OR`, `NOT`, parentheses, 'string',
//! integer, decimal and boolean literals, over the message's properties (`TAGS` is the tag).
//!
//! Evaluation follows Apache's three-valued logic: a missing property makes a comparison
//! unknown, `NOT unknown` stays unknown, and only a true result matches. Property values are
//! strings on the wire; compared with a number they are read as one (a value that is not a
//! number makes the comparison false), as Apache's evaluator converts them.

mod lexer;
mod parser;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Prop(String),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(Cmp, Lit, Lit),
    Between(Lit, Lit, Lit),
    In(Lit, Vec<String>),
    IsNull(Lit),
    Text(&'static str, Lit, String),
}

/// Longest expression accepted, so a client cannot make every pop parse megabytes.
pub const MAX_LEN: usize = 4096;

/// Parses an expression; the error says what is wrong (for ILLEGAL_FILTER_EXPRESSION).
pub fn parse(src: &str) -> Result<Expr, String> {
    if src.trim().is_empty() {
        return Err("empty SQL92 expression".into());
    }
    if src.len() > MAX_LEN {
        return Err(format!("SQL92 expression longer than {MAX_LEN} bytes"));
    }
    parser::Parser::new(lexer::lex(src)?).parse_all()
}

#[derive(Debug, Clone, PartialEq)]
enum Val<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Expr {
    /// Whether a message with these properties matches (`get` returns a property's value).
    pub fn matches<'a>(&'a self, get: &dyn Fn(&str) -> Option<&'a str>) -> bool {
        self.eval(get) == Some(true)
    }

    fn eval<'a>(&'a self, get: &dyn Fn(&str) -> Option<&'a str>) -> Option<bool> {
        match self {
            Expr::Or(a, b) => match (a.eval(get), b.eval(get)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            Expr::And(a, b) => match (a.eval(get), b.eval(get)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            Expr::Not(e) => e.eval(get).map(|v| !v),
            Expr::IsNull(l) => Some(value(l, get).is_none()),
            Expr::Cmp(op, l, r) => compare(*op, value(l, get)?, value(r, get)?),
            Expr::Between(v, lo, hi) => {
                let (v, lo, hi) = (value(v, get)?, value(lo, get)?, value(hi, get)?);
                Some(compare(Cmp::Ge, v.clone(), lo)? && compare(Cmp::Le, v, hi)?)
            }
            Expr::In(l, items) => match value(l, get)? {
                Val::Str(s) => Some(items.iter().any(|i| i == s)),
                _ => Some(false),
            },
            Expr::Text(kind, l, pat) => match value(l, get)? {
                Val::Str(s) => Some(match *kind {
                    "CONTAINS" => s.contains(pat.as_str()),
                    "STARTSWITH" => s.starts_with(pat.as_str()),
                    _ => s.ends_with(pat.as_str()),
                }),
                _ => Some(false),
            },
        }
    }
}

fn value<'a>(l: &'a Lit, get: &dyn Fn(&str) -> Option<&'a str>) -> Option<Val<'a>> {
    match l {
        Lit::Prop(p) => get(p).map(Val::Str),
        Lit::Str(s) => Some(Val::Str(s)),
        Lit::Int(n) => Some(Val::Int(*n)),
        Lit::Float(f) => Some(Val::Float(*f)),
        Lit::Bool(b) => Some(Val::Bool(*b)),
        Lit::Null => None,
    }
}

fn num(v: &Val<'_>) -> Option<f64> {
    match v {
        Val::Int(n) => Some(*n as f64),
        Val::Float(f) => Some(*f),
        Val::Str(s) => s.trim().parse::<f64>().ok(),
        Val::Bool(_) => None,
    }
}

fn compare(op: Cmp, l: Val<'_>, r: Val<'_>) -> Option<bool> {
    let ord = match (&l, &r) {
        (Val::Str(a), Val::Str(b)) => {
            // Strings compare for (in)equality only, as Apache's evaluator does.
            return match op {
                Cmp::Eq => Some(a == b),
                Cmp::Ne => Some(a != b),
                _ => Some(false),
            };
        }
        (Val::Bool(a), other) | (other, Val::Bool(a)) => {
            let b = match other {
                Val::Bool(b) => *b,
                Val::Str(s) if s.eq_ignore_ascii_case("true") => true,
                Val::Str(s) if s.eq_ignore_ascii_case("false") => false,
                _ => return Some(false),
            };
            return match op {
                Cmp::Eq => Some(*a == b),
                Cmp::Ne => Some(*a != b),
                _ => Some(false),
            };
        }
        (Val::Int(a), Val::Int(b)) => a.cmp(b),
        _ => {
            let (Some(a), Some(b)) = (num(&l), num(&r)) else {
                return Some(false);
            };
            match a.partial_cmp(&b) {
                Some(o) => o,
                None => return Some(false),
            }
        }
    };
    use std::cmp::Ordering::*;
    Some(match op {
        Cmp::Eq => ord == Equal,
        Cmp::Ne => ord != Equal,
        Cmp::Gt => ord == Greater,
        Cmp::Ge => ord != Less,
        Cmp::Lt => ord == Less,
        Cmp::Le => ord != Greater,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn m(e: &str, props: &[(&str, &str)]) -> bool {
        let p: HashMap<String, String> = props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let expr = parse(e).unwrap();
        let get = |k: &str| p.get(k).map(String::as_str);
        expr.matches(&get)
    }

    #[test]
    fn comparisons_on_string_properties() {
        let hits: Vec<i32> = (0..10)
            .filter(|i| m("a > 5", &[("a", &i.to_string())]))
            .collect();
        assert_eq!(hits, vec![6, 7, 8, 9]);
        assert!(m("a >= 5.5 AND a < 7", &[("a", "6")]));
        assert!(!m("a > 5", &[("a", "x")]), "not a number: false");
        assert!(!m("a > 5", &[]), "missing: unknown");
        assert!(!m("NOT a > 5", &[]), "NOT unknown stays unknown");
        assert!(m("a = 'x' AND b <> 'y'", &[("a", "x"), ("b", "z")]));
        assert!(m("a = 3", &[("a", "3")]) && m("flag = TRUE", &[("flag", "true")]));
        assert!(m("TAGS IN ('A', 'B')", &[("TAGS", "B")]));
        assert!(m("a NOT IN ('A')", &[("a", "B")]) && !m("a NOT IN ('A')", &[]));
        assert!(m(
            "s CONTAINS 'ell' AND s STARTSWITH 'h' AND s ENDSWITH 'o'",
            &[("s", "hello")]
        ));
        assert!(m("a = 'it''s'", &[("a", "it's")]));
        assert!(m(
            "(a = '1' OR a = '2') AND NOT b IS NOT NULL",
            &[("a", "2")]
        ));
        assert!(m("a = -1", &[("a", "-1")]));
    }

    #[test]
    fn between_or_null_as_apache() {
        // a BETWEEN 2 AND 3 OR b IS NULL, over a = 0..4 with b set on the even ones.
        let hits: Vec<i32> = (0..5)
            .filter(|i| {
                let a = i.to_string();
                let mut p = vec![("a", a.as_str())];
                if i % 2 == 0 {
                    p.push(("b", "x"));
                }
                m("a BETWEEN 2 AND 3 OR b IS NULL", &p)
            })
            .collect();
        assert_eq!(hits, vec![1, 2, 3]);
        assert!(m("a NOT BETWEEN 2 AND 3", &[("a", "5")]));
    }

    #[test]
    fn malformed_expressions_are_refused() {
        for bad in [
            "",
            "a >",
            "a > 5 AND",
            "(a = 1",
            "a = 'x",
            "a BETWEEN 1",
            "a IN 1",
            "a ~ 1",
            "a b",
            "a = 1 garbage",
            "IS NULL",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse(&"a = 1 OR ".repeat(1000)).is_err());
        assert!(parse(&format!("{}a = 1{}", "(".repeat(500), ")".repeat(500))).is_err());
        assert!(parse(&format!("{}a = 1", "NOT ".repeat(500))).is_err());
        assert!(parse(&format!("{}a = 1{}", "(".repeat(20), ")".repeat(20))).is_ok());
    }
}
