//! The SQL92 filter: what expressions select, unknowns, errors and their positions, limits.

use std::collections::HashMap;

use super::*;

struct Msg(HashMap<&'static str, &'static str>);

impl Fields for Msg {
    fn field(&self, name: &str) -> Option<&str> {
        self.0.get(name).copied()
    }
}

fn msg(fields: &[(&'static str, &'static str)]) -> Msg {
    Msg(fields.iter().copied().collect())
}

fn sel(sql: &str, m: &Msg) -> bool {
    SqlFilter::parse(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .matches(m)
}

#[test]
fn rocketmq_style_expressions_select_what_they_say() {
    let m = msg(&[
        ("a", "2"),
        ("region", "eu"),
        ("price", "9.5"),
        ("TAG", "paid"),
        ("KEY", "order-42"),
        ("flag", "true"),
    ]);
    for (sql, want) in [
        ("a BETWEEN 0 AND 3", true),
        ("a between 3 and 9", false),
        ("a NOT BETWEEN 3 AND 9", true),
        ("region = 'eu'", true),
        ("region <> 'eu'", false),
        ("region IN ('us', 'eu')", true),
        ("region NOT IN ('us', 'eu')", false),
        ("price > 9 AND price <= 9.5", true),
        ("price >= 10 OR TAG = 'paid'", true),
        ("NOT (TAG = 'paid')", false),
        ("KEY = 'order-42' AND missing IS NULL", true),
        ("missing IS NOT NULL", false),
        ("region IS NOT NULL and (a = 2 or a = 3)", true),
        ("flag", true),
        ("flag = TRUE", true),
        ("TRUE", true),
        ("a = 2.0", true),
        ("-1 < a", true),
        ("1e1 > a", true),
        ("region = 'it''s'", false),
    ] {
        assert_eq!(sel(sql, &m), want, "{sql}");
    }
}

#[test]
fn unknown_selects_nothing_either_way() {
    let m = msg(&[("a", "x"), ("b", "1")]);
    // A missing property or a non-number compared with a number is unknown.
    for sql in [
        "missing > 1",
        "NOT (missing > 1)",
        "a > 1",
        "NOT (a > 1)",
        "missing = 'x'",
        "b IN (missing, 2)",
    ] {
        assert!(!sel(sql, &m), "{sql}");
    }
    assert!(sel("missing > 1 OR b = 1", &m), "OR with one true side");
    assert!(!sel("missing > 1 AND b = 1", &m));
    assert!(sel("b IN (missing, 1)", &m));
}

#[test]
fn errors_name_the_position() {
    for (sql, position, needle) in [
        ("", 0, "empty"),
        ("a >", 3, "expected a property name or a literal"),
        ("a = 1 AND", 9, "expected a property name"),
        ("(a = 1", 6, "expected \")\""),
        ("a = 'x", 4, "unterminated string"),
        ("a # 1", 2, "unexpected character '#'"),
        ("a > 'x'", 2, "strings compare with = and <>"),
        ("a IN 1", 5, "expected \"(\" after IN"),
        ("a BETWEEN 1 2", 12, "expected AND"),
        ("a NOT 1", 6, "expected BETWEEN or IN"),
        ("a = 1 b = 2", 6, "unexpected \"b\""),
        ("a IS NOT 3", 9, "expected NULL"),
        ("1..2 = a", 0, "is not a number"),
        ("AND = 1", 0, "expected a property name or a literal"),
    ] {
        let e = SqlFilter::parse(sql).expect_err(sql);
        assert_eq!(e.position, position, "{sql}: {e}");
        assert!(e.reason.contains(needle), "{sql}: {e}");
    }
}

#[test]
fn deep_or_long_input_is_refused_not_a_stack_overflow() {
    let deep = format!("{}a = 1{}", "(".repeat(100), ")".repeat(100));
    assert!(SqlFilter::parse(&deep).is_err());
    let nots = format!("{}a = 1", "NOT ".repeat(1000));
    assert!(SqlFilter::parse(&nots).is_err());
    let long = format!("a = '{}'", "x".repeat(MAX_SQL_BYTES));
    assert!(SqlFilter::parse(&long).is_err());
    let ok = format!("{}a = 1{}", "(".repeat(60), ")".repeat(60));
    assert!(SqlFilter::parse(&ok).is_ok());
}
