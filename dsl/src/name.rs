//! Stage names: the validated names that label every metric, log line and error of a pipeline.

use std::fmt;
use std::sync::Arc;

/// A stage name: 1 to 64 characters of ASCII letters, digits, `_`, `-` and `.`, starting with a letter.
/// Names are used as metric labels, so they are kept to characters every exporter accepts.
///
/// ```
/// use weir_dsl::StageName;
/// assert_eq!(StageName::new("orders.parse").unwrap().as_str(), "orders.parse");
/// let error = StageName::new("9 lives").unwrap_err();
/// assert_eq!(error.to_string(), "invalid stage name `9 lives`: must start with an ASCII letter");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StageName(Arc<str>);

/// Why a stage name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stage name `{name}`: {problem}")]
pub struct InvalidStageName {
    /// The refused name.
    pub name: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl StageName {
    /// The longest name accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, InvalidStageName> {
        let refuse = |problem| {
            Err(InvalidStageName {
                name: name.to_owned(),
                problem,
            })
        };
        if name.is_empty() {
            return refuse("must not be empty");
        }
        if name.len() > Self::MAX_LEN {
            return refuse("must be at most 64 characters");
        }
        if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return refuse("must start with an ASCII letter");
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return refuse("may contain only ASCII letters, digits, `_`, `-` and `.`");
        }
        Ok(Self(name.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as the shared string the runtime's errors and metrics take.
    pub fn to_shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl fmt::Display for StageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::StageName;

    #[test]
    fn accepts_label_safe_names_and_explains_refusals() {
        for good in ["a", "orders", "orders.parse-v2_x", &"a".repeat(64)] {
            assert!(StageName::new(good).is_ok(), "{good}");
        }
        let cases = [
            ("", "must not be empty"),
            ("_x", "must start with an ASCII letter"),
            (
                "a b",
                "may contain only ASCII letters, digits, `_`, `-` and `.`",
            ),
            ("é", "must start with an ASCII letter"),
        ];
        for (bad, problem) in cases {
            assert_eq!(StageName::new(bad).unwrap_err().problem, problem, "{bad:?}");
        }
        assert_eq!(
            StageName::new(&"a".repeat(65)).unwrap_err().problem,
            "must be at most 64 characters"
        );
    }
}
