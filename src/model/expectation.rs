//! Pure: the grammar of a drill check's `expect`, parsed once. Policy
//! validation parses it (and reports every error at file:line, including an
//! invalid regex) and drill evaluation uses the parsed value, so what passes
//! review is exactly what a drill can evaluate.
//!
//! Forms: `= N`, `!= N`, `>= N`, `<= N`, `> N`, `< N` (N a finite number),
//! `non-empty`, `~ REGEX`.

use serde::Serialize;

/// A parsed expectation; keeps its text for display and serialization.
#[derive(Debug, Clone)]
pub struct Expectation {
    text: String,
    test: Test,
}

#[derive(Debug, Clone)]
enum Test {
    NonEmpty,
    Matches(regex::Regex),
    Compare(Op, f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Ge,
    Le,
    Ne,
    Eq,
    Gt,
    Lt,
}

/// Longest operators first, so `>=` is not read as `>` then `= N`.
const OPS: [(&str, Op); 6] = [
    (">=", Op::Ge),
    ("<=", Op::Le),
    ("!=", Op::Ne),
    ("=", Op::Eq),
    (">", Op::Gt),
    ("<", Op::Lt),
];

/// The forms, for error messages and docs.
pub const FORMS: &str =
    "use `= N`, `!= N`, `>= N`, `<= N`, `> N`, `< N` (N a number), `non-empty` or `~ REGEX`";

impl Expectation {
    /// Parses `text`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Expectation, String> {
        let e = text.trim();
        let test = if e == "non-empty" {
            Test::NonEmpty
        } else if let Some(pattern) = e.strip_prefix('~') {
            let pattern = pattern.trim();
            if pattern.is_empty() {
                return Err(format!("`{e}`: the regex after `~` is empty"));
            }
            let re =
                regex::Regex::new(pattern).map_err(|err| format!("`{e}`: invalid regex: {err}"))?;
            Test::Matches(re)
        } else if let Some((op, rhs)) = OPS
            .iter()
            .find_map(|(sym, op)| e.strip_prefix(sym).map(|rhs| (*op, rhs.trim())))
        {
            match rhs.parse::<f64>() {
                Ok(n) if n.is_finite() => Test::Compare(op, n),
                _ => return Err(format!("`{e}`: {rhs:?} is not a number")),
            }
        } else {
            return Err(format!("unknown expectation `{e}`"));
        };
        Ok(Expectation {
            text: text.to_string(),
            test,
        })
    }

    /// The text as written in the policy.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Evaluates against a query's first value (`None` = no row or NULL);
    /// the error says what was expected and what came back.
    pub fn check(&self, value: Option<&str>) -> Result<(), String> {
        let shown = value.unwrap_or("no value");
        match &self.test {
            Test::NonEmpty => match value {
                Some(v) if !v.is_empty() => Ok(()),
                _ => Err(format!("expected a non-empty value, got {shown}")),
            },
            Test::Matches(re) => match value {
                Some(v) if re.is_match(v) => Ok(()),
                _ => Err(format!(
                    "expected a value matching /{}/, got {shown}",
                    re.as_str()
                )),
            },
            Test::Compare(op, want) => {
                let (sym, rhs) = self.operator_and_operand();
                let got: f64 = value
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| format!("expected {sym} {rhs}, got {shown}"))?;
                let ok = match op {
                    Op::Ge => got >= *want,
                    Op::Le => got <= *want,
                    Op::Ne => got != *want,
                    Op::Eq => got == *want,
                    Op::Gt => got > *want,
                    Op::Lt => got < *want,
                };
                if ok {
                    Ok(())
                } else {
                    Err(format!("expected {sym} {rhs}, got {shown}"))
                }
            }
        }
    }

    /// The operator and the operand as written (messages quote them verbatim).
    fn operator_and_operand(&self) -> (&str, &str) {
        let e = self.text.trim();
        OPS.iter()
            .find_map(|(sym, _)| e.strip_prefix(sym).map(|rhs| (*sym, rhs.trim())))
            .unwrap_or(("", e))
    }
}

impl PartialEq for Expectation {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl std::fmt::Display for Expectation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Expectation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(expect: &str, value: Option<&str>) -> Result<(), String> {
        Expectation::parse(expect)?.check(value)
    }

    #[test]
    fn documented_forms_parse() {
        for ok in [
            "= 1",
            ">= 1",
            "<=0",
            "> -3",
            "< 10",
            "!= 0",
            "= 1.5",
            "non-empty",
            "~ ^a+$",
        ] {
            assert!(Expectation::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn what_evaluation_cannot_use_is_rejected_when_parsed() {
        for (bad, why) in [
            ("", "unknown expectation"),
            ("1", "unknown expectation"),
            ("== 1", "is not a number"),
            (">= x", "is not a number"),
            ("= inf", "is not a number"),
            ("= NaN", "is not a number"),
            ("~", "regex after `~` is empty"),
            ("~ (unclosed", "invalid regex"),
            ("empty", "unknown expectation"),
        ] {
            let err = Expectation::parse(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn evaluation_compares_numbers_and_matches_text() {
        assert!(eval(">= 1", Some("3")).is_ok());
        assert!(eval("!= 0", Some("2")).is_ok());
        assert!(eval("= 2.5", Some("2.5")).is_ok());
        assert_eq!(
            eval(">= 10", Some("3")).unwrap_err(),
            "expected >= 10, got 3"
        );
        assert_eq!(eval("= 1", None).unwrap_err(), "expected = 1, got no value");
        assert!(eval("non-empty", Some("x")).is_ok());
        assert!(eval("non-empty", Some("")).is_err());
        assert!(eval("~ ^ab+$", Some("abbb")).is_ok());
        assert_eq!(
            eval("~ ^ab+$", Some("a")).unwrap_err(),
            "expected a value matching /^ab+$/, got a"
        );
    }

    /// Moved from drill::verdict when evaluation switched to this grammar.
    #[test]
    fn expectations_compare_numbers_text_and_patterns() {
        assert!(eval(">= 1", Some("2")).is_ok());
        assert!(eval("= 500", Some("500")).is_ok());
        assert_eq!(
            eval("= 500", Some("499")).unwrap_err(),
            "expected = 500, got 499"
        );
        assert!(eval("< 3", Some("3")).is_err());
        assert!(eval("non-empty", Some("x")).is_ok());
        assert!(eval("non-empty", None).is_err());
        assert!(eval("~ ^v[0-9]+", Some("v12")).is_ok());
        assert!(eval("~ ^v[0-9]+", Some("x")).is_err());
        assert!(eval("=> 3", Some("3")).is_err());
    }

    #[test]
    fn serializes_and_displays_as_written() {
        let e = Expectation::parse(">=  1").unwrap();
        assert_eq!(e.to_string(), ">=  1");
        assert_eq!(serde_json::to_string(&e).unwrap(), "\">=  1\"");
    }
}
