//! Hand-written JSON schemas and serde helpers for the few StreamJob fields
//! whose derived schema would not be a valid Kubernetes structural schema,
//! or whose wire format is more forgiving than the Rust type.

use std::fmt;

use schemars::{Schema, SchemaGenerator, json_schema};
use serde::{Deserializer, de};

/// Schema for free-form objects such as pod templates: the API server must
/// keep every field, because it cannot know the whole PodSpec schema here.
pub(crate) fn preserve_unknown_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Schema for resource quantities, mirroring Kubernetes' own `Quantity`, so
/// that `cpu: 2` and `cpu: "2"` are both accepted by the API server.
pub(crate) fn quantity(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
    })
}

/// Accepts a CPU quantity written as a YAML string or number; see
/// [`QuantityVisitor`].
pub(crate) fn deserialize_cpu<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(QuantityVisitor(crate::crd::default_cpu))
}

/// Accepts a memory quantity written as a YAML string or number; see
/// [`QuantityVisitor`].
pub(crate) fn deserialize_memory<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(QuantityVisitor(crate::crd::default_memory))
}

/// Keeps a quantity as a string whether it was written as a string or a
/// number, since users write `cpu: 1` as often as `cpu: "1"`. An explicit
/// `null` means the default: the published schema marks quantities nullable
/// (as Kubernetes does for int-or-string fields), so the API server can hand
/// one back.
struct QuantityVisitor(fn() -> String);

impl de::Visitor<'_> for QuantityVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a resource quantity such as 500m, 2 or 1Gi")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Ok((self.0)())
    }

    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        Ok((self.0)())
    }
}

/// Whether `s` is a Kubernetes resource quantity (`<number><suffix>`), e.g.
/// `500m`, `2`, `1.5`, `1Gi` or `1e3`.
pub(crate) fn is_valid_quantity(s: &str) -> bool {
    let (number, suffix) = split_quantity(s);
    let mut parts = number.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let frac = parts.next();
    let digits_ok = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let number_ok = digits_ok(whole)
        && frac.is_none_or(digits_ok)
        && !(whole.is_empty() && frac.is_none_or(str::is_empty));
    let suffix_ok = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|exp| exp.strip_prefix(['+', '-']).unwrap_or(exp))
        .is_some_and(|exp| !exp.is_empty() && digits_ok(exp));
    number_ok && suffix_ok
}

fn split_quantity(s: &str) -> (&str, &str) {
    let s = s.strip_prefix('+').unwrap_or(s);
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s.split_at(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for ok in ["1", "500m", "1.5", "1Gi", "512Mi", "2k", "1e3", ".5", "+1"] {
            assert!(is_valid_quantity(ok), "{ok}");
        }
        for bad in ["", "1GB", "one", "1.2.3", "-1", "Gi", "1 Gi", "1e"] {
            assert!(!is_valid_quantity(bad), "{bad}");
        }
    }
}
