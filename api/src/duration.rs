//! Human-readable durations (`500ms`, `10s`, `1h30m`, `2d`) as used by every
//! time-valued field of the StreamJob spec, with parsing, shortest-form
//! formatting, serde and JSON-schema support.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Regular expression published in the CRD so that the API server rejects
/// malformed durations before they ever reach the operator.
pub const DURATION_PATTERN: &str = "^([0-9]+(ns|us|ms|s|m|h|d))+$";

const EXAMPLES: &str = "expected a number with a unit, e.g. 10s, 500ms, 5m";

/// Units from largest to smallest; formatting relies on this order to prefer
/// the largest unit when two renderings are equally short.
const UNITS: [(&str, u128); 7] = [
    ("d", 86_400 * NANOS_PER_SEC),
    ("h", 3_600 * NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("s", NANOS_PER_SEC),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A span of time written as one or more `<integer><unit>` groups, e.g.
/// `500ms`, `10s`, `5m`, `1h30m` or `2d`.
///
/// Valid units are `ns`, `us`, `ms`, `s`, `m`, `h` and `d`. A bare number is
/// rejected on purpose: `10` could mean milliseconds or seconds, and guessing
/// wrong silently changes checkpoint or restart behaviour by a factor of 1000.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// The empty duration, written `0s`.
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);

    /// A duration of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    /// A duration of `mins` minutes.
    pub const fn from_mins(mins: u64) -> Self {
        Duration(std::time::Duration::from_secs(mins * 60))
    }

    /// A duration of `hours` hours.
    pub const fn from_hours(hours: u64) -> Self {
        Duration(std::time::Duration::from_secs(hours * 3_600))
    }

    /// The wrapped standard-library duration.
    pub const fn as_std(self) -> std::time::Duration {
        self.0
    }

    /// Whether this duration is zero.
    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// Total whole milliseconds.
    pub const fn as_millis(self) -> u128 {
        self.0.as_millis()
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

/// Why a duration string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration \"{input}\": {reason}")]
pub struct DurationParseError {
    /// The text that was rejected.
    pub input: String,
    /// Human explanation, including an example of the accepted form.
    pub reason: String,
}

impl DurationParseError {
    fn new(input: &str, reason: impl Into<String>) -> Self {
        DurationParseError {
            input: input.to_owned(),
            reason: reason.into(),
        }
    }
}

impl FromStr for Duration {
    type Err = DurationParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bytes = input.as_bytes();
        if bytes.is_empty() {
            return Err(DurationParseError::new(input, EXAMPLES));
        }
        let mut total: u128 = 0;
        let mut i = 0;
        while i < bytes.len() {
            let digits_start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i == digits_start {
                return Err(unexpected(input, i));
            }
            let unit_start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            if i == unit_start {
                return Err(if i == bytes.len() {
                    DurationParseError::new(input, EXAMPLES)
                } else {
                    unexpected(input, i)
                });
            }
            let unit = &input[unit_start..i];
            let Some(&(_, nanos_per_unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
                return Err(DurationParseError::new(
                    input,
                    format!("unknown unit \"{unit}\" (valid units: ns, us, ms, s, m, h, d)"),
                ));
            };
            let too_large = || DurationParseError::new(input, "value is too large");
            let value: u128 = input[digits_start..unit_start]
                .parse()
                .map_err(|_| too_large())?;
            total = value
                .checked_mul(nanos_per_unit)
                .and_then(|n| total.checked_add(n))
                .ok_or_else(too_large)?;
        }
        let secs = u64::try_from(total / NANOS_PER_SEC)
            .map_err(|_| DurationParseError::new(input, "value is too large"))?;
        // The remainder is below one second, so it always fits in u32.
        let nanos = (total % NANOS_PER_SEC) as u32;
        Ok(Duration(std::time::Duration::new(secs, nanos)))
    }
}

fn unexpected(input: &str, at: usize) -> DurationParseError {
    let found = input[at..].chars().next().unwrap_or(' ');
    let hint = match found {
        '.' | ',' => "; use whole numbers with a smaller unit, e.g. 1500ms instead of 1.5s",
        ' ' => "; remove the spaces, e.g. 1h30m",
        '-' => "; durations cannot be negative",
        _ => "",
    };
    if hint.is_empty() {
        DurationParseError::new(input, EXAMPLES)
    } else {
        DurationParseError::new(input, format!("unexpected '{found}'{hint}"))
    }
}

impl fmt::Display for Duration {
    /// Writes the shortest exact rendering, e.g. `90s` rather than `1m30s`,
    /// `1500ms` rather than `1s500ms` and `90m` rather than `1h30m`; a
    /// single-unit form is only used while its number has at most four
    /// digits, so `1d2h3m4s5ms` stays readable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.0.as_nanos();
        if total == 0 {
            return f.write_str("0s");
        }
        let mut best: Option<String> = None;
        let mut consider = |candidate: String| {
            if best.as_ref().is_none_or(|b| candidate.len() < b.len()) {
                best = Some(candidate);
            }
        };
        for (name, size) in UNITS {
            // Long single-unit numbers ("93784005ms") are short but unreadable;
            // beyond four digits the compound form wins.
            if total.is_multiple_of(size) && total / size < 10_000 {
                consider(format!("{}{name}", total / size));
            }
        }
        let mut rest = total;
        let mut compound = String::new();
        for (name, size) in UNITS {
            if rest >= size {
                compound.push_str(&format!("{}{name}", rest / size));
                rest %= size;
            }
        }
        consider(compound);
        f.write_str(best.as_deref().unwrap_or("0s"))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl de::Visitor<'_> for Visitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 10s, 500ms or 5m")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }

            // Numbers get the same message as an unparsable string, because
            // "invalid type: integer" does not tell the user a unit is missing.
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(DurationParseError::new(&v.to_string(), EXAMPLES)))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(DurationParseError::new(&v.to_string(), EXAMPLES)))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(DurationParseError::new(&v.to_string(), EXAMPLES)))
            }
        }

        // `deserialize_str` keeps non-self-describing formats working; YAML
        // still hands unquoted numbers to `visit_str`, so `10` gets the unit hint.
        deserializer.deserialize_str(Visitor)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Duration")
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_form_prefers_largest_unit_on_ties() {
        assert_eq!(Duration::from_hours(1).to_string(), "1h");
        assert_eq!(Duration::from_secs(0).to_string(), "0s");
    }
}
