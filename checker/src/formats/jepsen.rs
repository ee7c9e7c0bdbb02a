//! Jepsen etcd register logs: one register, read / write / cas.
//!
//! Each line is `[INFO  jepsen.util - ]PROCESS TYPE F VALUE`, separated by tabs or spaces, where
//! TYPE is `:invoke`, `:ok`, `:fail` or `:info`, F is `:read`, `:write` or `:cas`, and VALUE is
//! `nil`, a value, `[A B]` (cas from A to B) or `:timed-out`. `:info` and missing completions are
//! unknown outcomes; a failed cas observed a value other than A; a failed read or write took no
//! effect. Lines whose process is not a number (the nemesis) are skipped.

use super::{Pairing, ParseError};
use crate::op::{Op, OpKind, Outcome};

/// The key every op of a register log is recorded under.
pub const REGISTER_KEY: &str = "register";

/// Parse a whole log.
pub fn parse(text: &str) -> Result<Vec<Op>, ParseError> {
    let mut pairing = Pairing::new();
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let time = line_no as u64;
        let line = raw.trim();
        let line = line
            .split_once("jepsen.util - ")
            .map_or(line, |(_, rest)| rest);
        if line.is_empty() {
            continue;
        }
        let Some((process, kind, f, value)) = fields(line) else {
            return Err(ParseError::new(
                line_no,
                "expected PROCESS TYPE F VALUE",
                raw,
            ));
        };
        let Ok(process) = process.parse::<u64>() else {
            continue;
        };
        match kind {
            ":invoke" => {
                let op_kind = match f {
                    ":read" => OpKind::Read { result: None },
                    ":write" => OpKind::Write {
                        value: value.to_string(),
                    },
                    ":cas" => {
                        let (a, b) = cas_pair(value).ok_or_else(|| {
                            ParseError::new(line_no, "cas value is not [A B]", raw)
                        })?;
                        OpKind::Cas {
                            expected: a,
                            new: b,
                        }
                    }
                    other => {
                        return Err(ParseError::new(line_no, format!("unknown f {other}"), raw))
                    }
                };
                pairing.invoke(Op::new(
                    process,
                    REGISTER_KEY,
                    op_kind,
                    time,
                    None,
                    Outcome::Unknown,
                ));
            }
            ":ok" | ":fail" | ":info" => {
                let outcome = match kind {
                    ":ok" => Outcome::Ok,
                    ":fail" => Outcome::Fail,
                    _ => Outcome::Unknown,
                };
                pairing
                    .complete(process, outcome, time, nil_or(value))
                    .ok_or_else(|| ParseError::new(line_no, "completion without invocation", raw))?;
            }
            other => {
                return Err(ParseError::new(
                    line_no,
                    format!("unknown type {other}"),
                    raw,
                ))
            }
        }
    }
    Ok(pairing.finish())
}

/// Split off three whitespace-separated fields; the rest (which may hold spaces) is the value.
fn fields(line: &str) -> Option<(&str, &str, &str, &str)> {
    let mut rest = line.trim_start();
    let mut take = || {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (field, tail) = rest.split_at(end);
        rest = tail.trim_start();
        (!field.is_empty()).then_some(field)
    };
    let (process, kind, f) = (take()?, take()?, take()?);
    Some((process, kind, f, rest.trim_end()))
}

fn nil_or(v: &str) -> Option<String> {
    (v != "nil").then(|| v.to_string())
}

fn cas_pair(v: &str) -> Option<(Option<String>, String)> {
    let inner = v.strip_prefix('[')?.strip_suffix(']')?;
    let mut it = inner.split_whitespace();
    let (a, b) = (it.next()?, it.next()?);
    Some((nil_or(a), b.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_event_kind() {
        let log = "INFO  jepsen.util - 0\t:invoke\t:read\tnil\n\
                   INFO  jepsen.util - 1   :invoke :cas    [1 2]\n\
                   INFO  jepsen.util - 0\t:ok\t:read\t3\n\
                   INFO  jepsen.util - 1\t:fail\t:cas\t[1 2]\n\
                   INFO  jepsen.util - 2\t:invoke\t:write\t4\n\
                   INFO  jepsen.util - 2\t:info\t:write\t:timed-out\n\
                   INFO  jepsen.util - 3\t:invoke\t:write\t5\n";
        let ops = parse(log).expect("parses");
        let k = REGISTER_KEY;
        assert_eq!(
            ops,
            vec![
                Op::new(
                    0,
                    k,
                    OpKind::Read {
                        result: Some("3".into())
                    },
                    1,
                    Some(3),
                    Outcome::Ok
                ),
                Op::new(
                    1,
                    k,
                    OpKind::Cas {
                        expected: Some("1".into()),
                        new: "2".into()
                    },
                    2,
                    Some(4),
                    Outcome::Fail
                ),
                Op::new(
                    2,
                    k,
                    OpKind::Write { value: "4".into() },
                    5,
                    None,
                    Outcome::Unknown
                ),
                Op::new(
                    3,
                    k,
                    OpKind::Write { value: "5".into() },
                    7,
                    None,
                    Outcome::Unknown
                ),
            ]
        );
    }

    #[test]
    fn completion_without_invocation_is_an_error() {
        let err = parse("0\t:ok\t:read\tnil").expect_err("no invoke");
        assert_eq!(err.line, 1);
    }
}
