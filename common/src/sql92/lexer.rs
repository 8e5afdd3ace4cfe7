//! Tokens of RocketMQ's SQL92 subset: identifiers, 'strings' ('' escapes a quote), integer and
//! decimal numbers, the comparison operators, parentheses, commas and the keywords.

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    /// A keyword, upper-cased.
    Kw(&'static str),
}

const KEYWORDS: [&str; 14] = [
    "AND",
    "OR",
    "NOT",
    "BETWEEN",
    "IN",
    "IS",
    "NULL",
    "TRUE",
    "FALSE",
    "CONTAINS",
    "STARTSWITH",
    "ENDSWITH",
    "LIKE",
    "ESCAPE",
];

pub fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            b')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            b',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            b'=' => {
                out.push(Tok::Op("="));
                i += 1;
            }
            b'<' | b'>' => {
                let two = b.get(i + 1).copied();
                let op = match (c, two) {
                    (b'<', Some(b'>')) => "<>",
                    (b'<', Some(b'=')) => "<=",
                    (b'>', Some(b'=')) => ">=",
                    (b'<', _) => "<",
                    _ => ">",
                };
                i += op.len();
                out.push(Tok::Op(op));
            }
            b'\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(&ch) = b.get(i) else {
                        return Err("unterminated string literal".into());
                    };
                    if ch == b'\'' {
                        if b.get(i + 1) == Some(&b'\'') {
                            s.push('\'');
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    let start = i;
                    while i < b.len() && b[i] != b'\'' {
                        i += 1;
                    }
                    s.push_str(&src[start..i]);
                }
                out.push(Tok::Str(s));
            }
            b'0'..=b'9' | b'-' | b'.' => {
                let start = i;
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                let t = &src[start..i];
                let body = t.trim_end_matches(['L', 'l']);
                out.push(if let Ok(n) = body.parse::<i64>() {
                    Tok::Int(n)
                } else if let Ok(f) = t.trim_end_matches(['D', 'd', 'F', 'f']).parse::<f64>() {
                    Tok::Float(f)
                } else {
                    return Err(format!("bad number {t:?}"));
                });
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' => {
                let start = i;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'$' | b'.'))
                {
                    i += 1;
                }
                let w = &src[start..i];
                let up = w.to_ascii_uppercase();
                out.push(match KEYWORDS.iter().find(|k| **k == up) {
                    Some(k) => Tok::Kw(k),
                    None => Tok::Ident(w.to_string()),
                });
            }
            _ => {
                return Err(format!(
                    "unexpected character {:?} at {i}",
                    src[i..].chars().next().unwrap_or('?')
                ));
            }
        }
    }
    Ok(out)
}
