//! RocketMQ's SQL92 property filter: a parser with errors that name the position, and an
//! evaluator over one message's properties, `TAG` and `KEY`.
//!
//! ```text
//! expr    = and ("OR" and)*
//! and     = not ("AND" not)*
//! not     = "NOT" not | pred
//! pred    = "(" expr ")" | value [cmp value | "NOT"? "BETWEEN" value "AND" value
//!           | "NOT"? "IN" "(" value ("," value)* ")" | "IS" "NOT"? "NULL"]
//! cmp     = "=" | "<>" | "<" | "<=" | ">" | ">="
//! value   = identifier | number | 'string' | TRUE | FALSE | NULL
//! ```
//! Keywords are case-insensitive. Property values are strings; compared with a number, a
//! value that parses as one compares numerically, and one that does not (or a missing
//! property) makes the comparison unknown, which selects nothing (SQL's three-valued logic,
//! as RocketMQ does). The grammar is a dozen rules, so it is parsed by hand: a parsing crate
//! would cost more build time than the parser, and the errors say exactly where they are.
//!
//! Must never: panic or recurse without bound on any input (nesting is limited), or read
//! anything but the message it is given.

use std::fmt;

use lex::{Tok, lex};

mod lex;

/// Longest expression accepted, bytes.
pub const MAX_SQL_BYTES: usize = 4096;
/// Deepest nesting of parentheses and NOTs.
const MAX_DEPTH: usize = 64;

/// A parse error: what is wrong and the byte position (0-based) where it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlError {
    /// Byte offset into the expression.
    pub position: usize,
    /// What was expected or found.
    pub reason: String,
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at position {}: {}", self.position, self.reason)
    }
}

/// A parsed filter.
#[derive(Clone, Debug, PartialEq)]
pub struct SqlFilter {
    expr: Expr,
}

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Ident(String),
    Num(f64),
    Str(String),
    Bool(bool),
    Null,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Debug, PartialEq)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(Value, Cmp, Value),
    Between(Value, Value, Value),
    In(Value, Vec<Value>),
    IsNull(Value),
    /// A value alone: TRUE, FALSE, or a property read as a boolean.
    Truth(Value),
}

/// A message as the filter sees it.
pub trait Fields {
    /// The value of a property, or of `TAG` / `KEY`.
    fn field(&self, name: &str) -> Option<&str>;
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    at: usize,
    depth: usize,
}

fn is_kw(t: &Tok, kw: &str) -> bool {
    matches!(t, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
}

const KEYWORDS: [&str; 9] = [
    "AND", "OR", "NOT", "BETWEEN", "IN", "IS", "NULL", "TRUE", "FALSE",
];

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.at].0
    }

    fn pos(&self) -> usize {
        self.toks[self.at].1
    }

    fn error(&self, reason: impl Into<String>) -> SqlError {
        SqlError {
            position: self.pos(),
            reason: reason.into(),
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            Tok::Ident(s) => format!("{s:?}"),
            Tok::Num(n) => format!("{n}"),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Op(o) => format!("{o:?}"),
            Tok::LParen => "\"(\"".into(),
            Tok::RParen => "\")\"".into(),
            Tok::Comma => "\",\"".into(),
            Tok::End => "the end".into(),
        }
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if is_kw(self.peek(), kw) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), SqlError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.error(format!("expected {kw}, found {}", self.found())))
        }
    }

    fn deeper(&mut self) -> Result<(), SqlError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH}")));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.and()?;
        while self.eat_kw("OR") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.not()?;
        while self.eat_kw("AND") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, SqlError> {
        if self.eat_kw("NOT") {
            self.deeper()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.pred()
    }

    fn pred(&mut self) -> Result<Expr, SqlError> {
        if *self.peek() == Tok::LParen {
            self.at += 1;
            self.deeper()?;
            let inner = self.expr()?;
            self.depth -= 1;
            if *self.peek() != Tok::RParen {
                return Err(self.error(format!("expected \")\", found {}", self.found())));
            }
            self.at += 1;
            return Ok(inner);
        }
        let left = self.value()?;
        if let Tok::Op(op) = *self.peek() {
            let at = self.pos();
            self.at += 1;
            let cmp = match op {
                "=" => Cmp::Eq,
                "<>" => Cmp::Ne,
                "<" => Cmp::Lt,
                "<=" => Cmp::Le,
                ">" => Cmp::Gt,
                _ => Cmp::Ge,
            };
            let right = self.value()?;
            let ordered = !matches!(cmp, Cmp::Eq | Cmp::Ne);
            if ordered && (matches!(left, Value::Str(_)) || matches!(right, Value::Str(_))) {
                return Err(SqlError {
                    position: at,
                    reason: format!("{op} compares numbers; strings compare with = and <>"),
                });
            }
            return Ok(Expr::Cmp(left, cmp, right));
        }
        let negated = self.eat_kw("NOT");
        let e = if self.eat_kw("BETWEEN") {
            let low = self.value()?;
            self.expect_kw("AND")?;
            let high = self.value()?;
            Expr::Between(left, low, high)
        } else if self.eat_kw("IN") {
            if *self.peek() != Tok::LParen {
                return Err(self.error(format!("expected \"(\" after IN, found {}", self.found())));
            }
            self.at += 1;
            let mut list = vec![self.value()?];
            while *self.peek() == Tok::Comma {
                self.at += 1;
                list.push(self.value()?);
            }
            if *self.peek() != Tok::RParen {
                return Err(self.error(format!(
                    "expected \",\" or \")\" in the IN list, found {}",
                    self.found()
                )));
            }
            self.at += 1;
            Expr::In(left, list)
        } else if negated {
            return Err(self.error(format!(
                "expected BETWEEN or IN after NOT, found {}",
                self.found()
            )));
        } else if self.eat_kw("IS") {
            let not_null = self.eat_kw("NOT");
            self.expect_kw("NULL")?;
            let e = Expr::IsNull(left);
            return Ok(if not_null { Expr::Not(Box::new(e)) } else { e });
        } else {
            match left {
                Value::Bool(_) | Value::Ident(_) => Expr::Truth(left),
                _ => {
                    return Err(self.error(format!(
                        "expected a comparison, BETWEEN, IN or IS, found {}",
                        self.found()
                    )));
                }
            }
        };
        Ok(if negated { Expr::Not(Box::new(e)) } else { e })
    }

    fn value(&mut self) -> Result<Value, SqlError> {
        let v = match self.peek().clone() {
            Tok::Num(n) => Value::Num(n),
            Tok::Str(s) => Value::Str(s),
            Tok::Ident(s) if s.eq_ignore_ascii_case("TRUE") => Value::Bool(true),
            Tok::Ident(s) if s.eq_ignore_ascii_case("FALSE") => Value::Bool(false),
            Tok::Ident(s) if s.eq_ignore_ascii_case("NULL") => Value::Null,
            Tok::Ident(s) if !KEYWORDS.iter().any(|k| s.eq_ignore_ascii_case(k)) => Value::Ident(s),
            _ => {
                return Err(self.error(format!(
                    "expected a property name or a literal, found {}",
                    self.found()
                )));
            }
        };
        self.at += 1;
        Ok(v)
    }
}

/// A value as evaluated: a property's string, or a literal.
#[derive(Clone, Copy)]
enum Val<'a> {
    Num(f64),
    Str(&'a str),
    Bool(bool),
}

impl SqlFilter {
    /// Parses an expression; the error names the position.
    pub fn parse(src: &str) -> Result<SqlFilter, SqlError> {
        if src.len() > MAX_SQL_BYTES {
            return Err(SqlError {
                position: MAX_SQL_BYTES,
                reason: format!("longer than {MAX_SQL_BYTES} bytes"),
            });
        }
        let mut p = Parser {
            toks: lex(src)?,
            at: 0,
            depth: 0,
        };
        if *p.peek() == Tok::End {
            return Err(p.error("the expression is empty"));
        }
        let expr = p.expr()?;
        if *p.peek() != Tok::End {
            return Err(p.error(format!("unexpected {}", p.found())));
        }
        Ok(SqlFilter { expr })
    }

    /// Whether the message is selected (an unknown result selects nothing).
    pub fn matches(&self, m: &impl Fields) -> bool {
        eval(&self.expr, m) == Some(true)
    }
}

fn resolve<'a>(v: &'a Value, m: &'a impl Fields) -> Option<Val<'a>> {
    match v {
        Value::Ident(name) => m.field(name).map(Val::Str),
        Value::Num(n) => Some(Val::Num(*n)),
        Value::Str(s) => Some(Val::Str(s)),
        Value::Bool(b) => Some(Val::Bool(*b)),
        Value::Null => None,
    }
}

fn as_num(v: Val<'_>) -> Option<f64> {
    match v {
        Val::Num(n) => Some(n),
        Val::Str(s) => s.trim().parse().ok(),
        Val::Bool(_) => None,
    }
}

fn as_bool(v: Val<'_>) -> Option<bool> {
    match v {
        Val::Bool(b) => Some(b),
        Val::Str(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Val::Str(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// `a <cmp> b`: numbers if either side is a number literal, else strings (= and <>), else
/// booleans; unknown when a side is missing or does not convert.
fn compare(a: Val<'_>, cmp: Cmp, b: Val<'_>) -> Option<bool> {
    use std::cmp::Ordering;
    let ord = match (a, b) {
        (Val::Num(_), _) | (_, Val::Num(_)) => as_num(a)?.partial_cmp(&as_num(b)?)?,
        (Val::Str(x), Val::Str(y)) => {
            return match cmp {
                Cmp::Eq => Some(x == y),
                Cmp::Ne => Some(x != y),
                _ => as_num(a)?.partial_cmp(&as_num(b)?).map(|o| ordered(o, cmp)),
            };
        }
        _ => as_bool(a)?.cmp(&as_bool(b)?),
    };
    Some(match cmp {
        Cmp::Eq => ord == Ordering::Equal,
        Cmp::Ne => ord != Ordering::Equal,
        _ => ordered(ord, cmp),
    })
}

fn ordered(o: std::cmp::Ordering, cmp: Cmp) -> bool {
    use std::cmp::Ordering::*;
    match cmp {
        Cmp::Lt => o == Less,
        Cmp::Le => o != Greater,
        Cmp::Gt => o == Greater,
        Cmp::Ge => o != Less,
        Cmp::Eq => o == Equal,
        Cmp::Ne => o != Equal,
    }
}

fn eval(e: &Expr, m: &impl Fields) -> Option<bool> {
    match e {
        Expr::Or(a, b) => match (eval(a, m), eval(b, m)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Expr::And(a, b) => match (eval(a, m), eval(b, m)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Expr::Not(a) => eval(a, m).map(|b| !b),
        Expr::Cmp(a, cmp, b) => compare(resolve(a, m)?, *cmp, resolve(b, m)?),
        Expr::Between(v, low, high) => {
            let v = resolve(v, m)?;
            let above = compare(v, Cmp::Ge, resolve(low, m)?)?;
            let below = compare(v, Cmp::Le, resolve(high, m)?)?;
            Some(above && below)
        }
        Expr::In(v, list) => {
            let v = resolve(v, m)?;
            let mut unknown = false;
            for item in list {
                match resolve(item, m).and_then(|i| compare(v, Cmp::Eq, i)) {
                    Some(true) => return Some(true),
                    Some(false) => {}
                    None => unknown = true,
                }
            }
            if unknown { None } else { Some(false) }
        }
        Expr::IsNull(v) => Some(resolve(v, m).is_none()),
        Expr::Truth(v) => as_bool(resolve(v, m)?),
    }
}

#[cfg(test)]
mod tests;
