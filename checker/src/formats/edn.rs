//! Jepsen-style EDN event lines over many keys: get / put / append.
//!
//! One flat EDN map per line: `{:process 3, :type :invoke, :f :append, :key "1", :value "x"}`.
//! `get` returns the key's whole string value, `""` when never written; `put` replaces it;
//! `append` adds to its end. In this format an absent key and `""` are indistinguishable, so a
//! `get` returning `""` is read as "absent" (`None`), which is what the [`crate::KvModel`] starts
//! from; `put ""` becomes a delete for the same reason.
//!
//! Only the flat subset of EDN these files use is read: keywords, strings, integers, `nil`.

use super::{Pairing, ParseError};
use crate::op::{Op, OpKind, Outcome};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Keyword(String),
    Str(String),
    Int(i64),
    Nil,
}

/// Parse a whole file.
pub fn parse(text: &str) -> Result<Vec<Op>, ParseError> {
    let mut pairing = Pairing::new();
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let time = line_no as u64;
        if raw.trim().is_empty() {
            continue;
        }
        let map = parse_map(raw).map_err(|reason| ParseError::new(line_no, reason, raw))?;
        let get = |k: &str| map.get(k).cloned().unwrap_or(Value::Nil);
        let Value::Int(process) = get("process") else {
            continue;
        }; // nemesis and friends
        let process = u64::try_from(process)
            .map_err(|_| ParseError::new(line_no, "negative process", raw))?;
        let (Value::Keyword(kind), Value::Keyword(f)) = (get("type"), get("f")) else {
            return Err(ParseError::new(line_no, "missing :type or :f", raw));
        };
        let text_value = match get("value") {
            Value::Str(s) => Some(s),
            Value::Int(i) => Some(i.to_string()),
            Value::Nil => None,
            Value::Keyword(k) => Some(format!(":{k}")),
        };
        match kind.as_str() {
            "invoke" => {
                let key = match get("key") {
                    Value::Str(s) => s,
                    Value::Int(i) => i.to_string(),
                    _ => return Err(ParseError::new(line_no, "missing :key", raw)),
                };
                let value = text_value.unwrap_or_default();
                let op_kind = match f.as_str() {
                    "get" | "read" => OpKind::Read { result: None },
                    "put" | "write" if value.is_empty() => OpKind::Delete,
                    "put" | "write" => OpKind::Write { value },
                    "append" => OpKind::Append { value },
                    other => {
                        return Err(ParseError::new(line_no, format!("unknown :f {other}"), raw))
                    }
                };
                pairing.invoke(Op::new(process, key, op_kind, time, None, Outcome::Unknown));
            }
            "ok" | "fail" | "info" => {
                let outcome = match kind.as_str() {
                    "ok" => Outcome::Ok,
                    "fail" => Outcome::Fail,
                    _ => Outcome::Unknown,
                };
                pairing
                    .complete(process, outcome, time, text_value.filter(|v| !v.is_empty()))
                    .ok_or_else(|| ParseError::new(line_no, "completion without invocation", raw))?;
            }
            other => {
                return Err(ParseError::new(
                    line_no,
                    format!("unknown :type {other}"),
                    raw,
                ))
            }
        }
    }
    Ok(pairing.finish())
}

/// Parse one flat map `{:k v, ...}` into keyword name -> value.
fn parse_map(line: &str) -> Result<BTreeMap<String, Value>, String> {
    let body = line
        .trim()
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .ok_or("not a {...} map")?;
    let mut chars = body.chars().peekable();
    let mut items = Vec::new();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        let value = if c == '"' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next().ok_or("unterminated string")? {
                    '"' => break,
                    '\\' => match chars.next().ok_or("unterminated escape")? {
                        'n' => s.push('\n'),
                        't' => s.push('\t'),
                        other => s.push(other),
                    },
                    other => s.push(other),
                }
            }
            Value::Str(s)
        } else {
            let mut atom = String::new();
            while chars
                .peek()
                .is_some_and(|c| !c.is_whitespace() && *c != ',')
            {
                atom.extend(chars.next());
            }
            if let Some(k) = atom.strip_prefix(':') {
                Value::Keyword(k.to_string())
            } else if atom == "nil" {
                Value::Nil
            } else {
                Value::Int(
                    atom.parse()
                        .map_err(|_| format!("unsupported atom {atom}"))?,
                )
            }
        };
        items.push(value);
    }
    if items.len() % 2 != 0 {
        return Err("odd number of map items".into());
    }
    let mut map = BTreeMap::new();
    for pair in items.chunks(2) {
        let Value::Keyword(k) = &pair[0] else {
            return Err("map key is not a keyword".into());
        };
        map.insert(k.clone(), pair[1].clone());
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_get_put_append() {
        let text = r#"{:process 0, :type :invoke, :f :append, :key "1", :value "x 0 0 y"}
{:process 1, :type :invoke, :f :get, :key "1", :value nil}
{:process 0, :type :ok, :f :append, :key "1", :value "x 0 0 y"}
{:process 1, :type :ok, :f :get, :key "1", :value ""}
{:process 2, :type :invoke, :f :put, :key "2", :value "a \"q\""}
"#;
        let ops = parse(text).expect("parses");
        assert_eq!(
            ops,
            vec![
                Op::new(
                    0,
                    "1",
                    OpKind::Append {
                        value: "x 0 0 y".into()
                    },
                    1,
                    Some(3),
                    Outcome::Ok
                ),
                Op::new(
                    1,
                    "1",
                    OpKind::Read { result: None },
                    2,
                    Some(4),
                    Outcome::Ok
                ),
                Op::new(
                    2,
                    "2",
                    OpKind::Write {
                        value: "a \"q\"".into()
                    },
                    5,
                    None,
                    Outcome::Unknown
                ),
            ]
        );
    }

    #[test]
    fn malformed_line_is_an_error() {
        let err = parse("{:process 0, :type}").expect_err("odd map");
        assert_eq!(err.line, 1);
    }
}
