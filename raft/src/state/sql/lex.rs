//! The SQL92 filter's tokens: names, numbers, 'strings' (with '' for a quote), operators,
//! parentheses and commas, each with its byte position.
//!
//! Must never: panic on any input (every error names its position).

use super::SqlError;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Num(f64),
    Str(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    End,
}

pub(super) fn lex(src: &str) -> Result<Vec<(Tok, usize)>, SqlError> {
    let err = |position, reason: String| SqlError { position, reason };
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                out.push((Tok::LParen, start));
                i += 1;
            }
            b')' => {
                out.push((Tok::RParen, start));
                i += 1;
            }
            b',' => {
                out.push((Tok::Comma, start));
                i += 1;
            }
            b'=' => {
                out.push((Tok::Op("="), start));
                i += 1;
            }
            b'<' | b'>' => {
                let two = bytes.get(i + 1).copied();
                let op = match (c, two) {
                    (b'<', Some(b'=')) => "<=",
                    (b'<', Some(b'>')) => "<>",
                    (b'>', Some(b'=')) => ">=",
                    (b'<', _) => "<",
                    _ => ">",
                };
                i += op.len();
                out.push((Tok::Op(op), start));
            }
            b'\'' => {
                // 'it''s' is "it's", as in SQL.
                let mut s = String::new();
                i += 1;
                loop {
                    match src[i..].find('\'') {
                        None => return Err(err(start, "unterminated string".into())),
                        Some(k) => {
                            s.push_str(&src[i..i + k]);
                            i += k + 1;
                            if bytes.get(i) == Some(&b'\'') {
                                s.push('\'');
                                i += 1;
                            } else {
                                break;
                            }
                        }
                    }
                }
                out.push((Tok::Str(s), start));
            }
            b'0'..=b'9' | b'-' | b'.' => {
                i += 1;
                while i < bytes.len()
                    && (bytes[i].is_ascii_digit()
                        || matches!(bytes[i], b'.' | b'e' | b'E')
                        || (matches!(bytes[i], b'+' | b'-') && matches!(bytes[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
                let text = &src[start..i];
                let n: f64 = text
                    .parse()
                    .map_err(|_| err(start, format!("{text:?} is not a number")))?;
                out.push((Tok::Num(n), start));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'.'))
                {
                    i += 1;
                }
                out.push((Tok::Ident(src[start..i].to_owned()), start));
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(err(start, format!("unexpected character {ch:?}")));
            }
        }
    }
    out.push((Tok::End, src.len()));
    Ok(out)
}
