//! Reads `.properties` files the way Java's `Properties.load` does, so operators' existing
//! `broker-a.properties` files work unchanged: `#`/`!` comments, `=`, `:` or whitespace as the
//! separator, `\` line continuations and escapes, last duplicate wins.
//!
//! Deliberate difference: Java keeps trailing whitespace in values and then silently fails to
//! parse `listenPort=10911 ` as a number; [`PropertiesFile::get`] returns values trimmed, so such
//! lines work instead of being ignored.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertiesFile {
    entries: BTreeMap<String, String>,
}

impl PropertiesFile {
    pub fn parse(text: &str) -> Self {
        let mut entries = BTreeMap::new();
        let mut logical = String::new();
        let mut continuing = false;
        for raw in text.lines() {
            let line = if continuing { raw.trim_start() } else { raw };
            if !continuing {
                let t = line.trim_start();
                if t.is_empty() || t.starts_with('#') || t.starts_with('!') {
                    continue;
                }
            }
            let trailing_backslashes = line.chars().rev().take_while(|c| *c == '\\').count();
            if trailing_backslashes % 2 == 1 {
                logical.push_str(&line[..line.len() - 1]);
                continuing = true;
                continue;
            }
            logical.push_str(line);
            continuing = false;
            let (k, v) = split_entry(logical.trim_start());
            entries.insert(k, v);
            logical.clear();
        }
        if continuing && !logical.is_empty() {
            let (k, v) = split_entry(logical.trim_start());
            entries.insert(k, v);
        }
        Self { entries }
    }

    /// The value with surrounding whitespace removed.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|v| v.trim())
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.entries.insert(key.to_string(), value.to_string());
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.trim()))
    }
}

fn split_entry(s: &str) -> (String, String) {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut key_end = chars.len();
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '=' | ':' | ' ' | '\t' | '\u{c}' => {
                key_end = i;
                break;
            }
            _ => i += 1,
        }
    }
    let key = unescape(&chars[..key_end.min(chars.len())]);
    let mut j = key_end;
    while j < chars.len() && matches!(chars[j], ' ' | '\t' | '\u{c}') {
        j += 1;
    }
    if j < chars.len() && matches!(chars[j], '=' | ':') {
        j += 1;
    }
    while j < chars.len() && matches!(chars[j], ' ' | '\t' | '\u{c}') {
        j += 1;
    }
    let value = if j < chars.len() {
        unescape(&chars[j..])
    } else {
        String::new()
    };
    (key, value)
}

fn unescape(chars: &[char]) -> String {
    let mut out = String::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '\\' || i + 1 >= chars.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let n = chars[i + 1];
        i += 2;
        match n {
            't' => out.push('\t'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            'f' => out.push('\u{c}'),
            'u' if i + 4 <= chars.len() => {
                let hex: String = chars[i..i + 4].iter().collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) => {
                        out.push(ch);
                        i += 4;
                    }
                    None => out.push('u'),
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Parses a Java-style boolean leniently (`true`/`false`, any case).
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_forms() {
        let p = PropertiesFile::parse(
            "# c\n! c\nbrokerName = broker-a\nlistenPort=10911 \nk:v\nspaced value\n\
             multi=a\\\n   b\nesc=x\\u0041\\=\nempty\nlistenPort2 =  7\nbrokerName=broker-b\n",
        );
        assert_eq!(p.get("brokerName"), Some("broker-b"));
        assert_eq!(p.get("listenPort"), Some("10911"));
        assert_eq!(p.get("k"), Some("v"));
        assert_eq!(p.get("spaced"), Some("value"));
        assert_eq!(p.get("multi"), Some("ab"));
        assert_eq!(p.get("esc"), Some("xA="));
        assert_eq!(p.get("empty"), Some(""));
        assert_eq!(p.get("listenPort2"), Some("7"));
    }

    #[test]
    fn fixture_lines_with_utf8_comments() {
        let p = PropertiesFile::parse(
            "#暴露外网的IP\nbrokerIP1=47.96.232.192\nnamesrvAddr=a:9876;b:9876\n",
        );
        assert_eq!(p.get("brokerIP1"), Some("47.96.232.192"));
        assert_eq!(p.get("namesrvAddr"), Some("a:9876;b:9876"));
    }
}
