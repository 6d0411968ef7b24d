//! Loading StreamJob manifests from YAML: checks `apiVersion`/`kind`, maps
//! serde errors to full field paths with a suggested fix, and runs semantic
//! validation, so that a manifest accepted here is ready to run.

use crate::crd::StreamJob;
use crate::validation::ValidationErrors;
use crate::{API_VERSION, KIND};

/// Why a manifest could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The text is not a single YAML mapping.
    #[error("manifest is not valid YAML: {message}{}\nFix: {fix}.", location(*.line, *.column))]
    Yaml {
        /// What the YAML parser reported.
        message: String,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// 1-based column of the problem, when known.
        column: Option<usize>,
        /// Suggested fix.
        fix: String,
    },

    /// `apiVersion` is missing or not `weir.dev/v1alpha1`.
    #[error(
        "apiVersion: expected {API_VERSION}, found {}\nFix: set `apiVersion: {API_VERSION}`.",
        describe_found(.found.as_deref())
    )]
    WrongApiVersion {
        /// The value found, if any.
        found: Option<String>,
    },

    /// `kind` is missing or not `StreamJob`.
    #[error(
        "kind: expected {KIND}, found {}\nFix: set `kind: {KIND}`.",
        describe_found(.found.as_deref())
    )]
    WrongKind {
        /// The value found, if any.
        found: Option<String>,
    },

    /// A field has the wrong type or value, or is unknown or missing.
    #[error("{path}: {message}\nFix: {fix}.")]
    Field {
        /// Full path of the field, e.g. `spec.checkpointing.interval`.
        path: String,
        /// What is wrong with it.
        message: String,
        /// Suggested fix.
        fix: String,
    },

    /// The manifest is well-formed but breaks validation rules.
    #[error(
        "StreamJob manifest is invalid ({} problem{}):\n{}",
        .0.len(),
        if .0.len() == 1 { "" } else { "s" },
        indent(&.0.to_string())
    )]
    Invalid(ValidationErrors),
}

impl ManifestError {
    /// The field path the error is about, when it concerns a single field.
    pub fn field(&self) -> Option<&str> {
        match self {
            ManifestError::Yaml { .. } => None,
            ManifestError::WrongApiVersion { .. } => Some("apiVersion"),
            ManifestError::WrongKind { .. } => Some("kind"),
            ManifestError::Field { path, .. } => Some(path),
            ManifestError::Invalid(errs) if errs.len() == 1 => {
                errs.errors().first().map(|e| e.field.as_str())
            }
            ManifestError::Invalid(_) => None,
        }
    }
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
        (Some(l), None) => format!(" (line {l})"),
        _ => String::new(),
    }
}

fn describe_found(found: Option<&str>) -> String {
    match found {
        Some(v) => v.to_owned(),
        None => "nothing (the field is missing)".to_owned(),
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  - {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses and validates a StreamJob manifest.
///
/// The manifest must be a single YAML document with `apiVersion:
/// weir.dev/v1alpha1` and `kind: StreamJob`. Unknown fields in `spec` are
/// rejected, defaults are applied, and every validation rule is checked.
pub fn parse_manifest(yaml: &str) -> Result<StreamJob, ManifestError> {
    let job = parse_manifest_unvalidated(yaml)?;
    job.validate().map_err(ManifestError::Invalid)?;
    Ok(job)
}

/// Like [`parse_manifest`] but skips semantic validation; use it when the
/// caller reports validation problems in its own way.
pub fn parse_manifest_unvalidated(yaml: &str) -> Result<StreamJob, ManifestError> {
    // A first untyped pass gives apiVersion/kind errors precedence: with the
    // wrong kind, complaints about spec fields would only mislead.
    let doc: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(yaml_error)?;
    let map = match &doc {
        serde_yaml::Value::Mapping(m) => m,
        serde_yaml::Value::Null => {
            return Err(ManifestError::Yaml {
                message: "the document is empty".into(),
                line: None,
                column: None,
                fix: format!(
                    "write a StreamJob manifest with apiVersion: {API_VERSION}, kind: {KIND}, \
                     metadata and spec"
                ),
            });
        }
        other => {
            return Err(ManifestError::Yaml {
                message: format!("expected a mapping, found {}", yaml_kind(other)),
                line: None,
                column: None,
                fix: format!(
                    "write the manifest as a mapping with apiVersion: {API_VERSION}, kind: \
                     {KIND}, metadata and spec"
                ),
            });
        }
    };
    let api_version = map.get("apiVersion").map(scalar_text);
    if api_version.as_deref() != Some(API_VERSION) {
        return Err(ManifestError::WrongApiVersion { found: api_version });
    }
    let kind = map.get("kind").map(scalar_text);
    if kind.as_deref() != Some(KIND) {
        return Err(ManifestError::WrongKind { found: kind });
    }

    // Deserialize from the text rather than from `doc` so that errors keep
    // their line and column.
    let de = serde_yaml::Deserializer::from_str(yaml);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        field_error(&path, &e.into_inner().to_string())
    })
}

fn yaml_error(e: serde_yaml::Error) -> ManifestError {
    let loc = e.location();
    let mut message = e.to_string();
    // serde_yaml appends the location to its message; it is reported
    // separately, so drop the duplicate.
    if let Some(idx) = message.find(" at line ") {
        message.truncate(idx);
    }
    ManifestError::Yaml {
        message,
        line: loc.as_ref().map(|l| l.line()),
        column: loc.as_ref().map(|l| l.column()),
        fix: "check the indentation and quoting around that position".into(),
    }
}

fn yaml_kind(v: &serde_yaml::Value) -> &'static str {
    match v {
        serde_yaml::Value::Null => "nothing",
        serde_yaml::Value::Bool(_) => "a boolean",
        serde_yaml::Value::Number(_) => "a number",
        serde_yaml::Value::String(_) => "a string",
        serde_yaml::Value::Sequence(_) => "a list",
        serde_yaml::Value::Mapping(_) => "a mapping",
        serde_yaml::Value::Tagged(_) => "a tagged value",
    }
}

fn scalar_text(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_default(),
    }
}

/// Turns a serde message into a field error with a fix, naming the
/// offending field itself rather than its parent where serde reports the
/// parent (unknown and missing fields).
fn field_error(path: &str, raw: &str) -> ManifestError {
    // serde_yaml prefixes messages with its own (shorter) idea of the path;
    // the path from serde_path_to_error is the one reported.
    let raw = match raw.split_once(": ") {
        Some((prefix, rest))
            if !prefix.is_empty()
                && !prefix.contains(char::is_whitespace)
                && path.starts_with(prefix) =>
        {
            rest
        }
        _ => raw,
    };
    let (message, position) = match raw.find(" at line ") {
        Some(idx) => (&raw[..idx], Some(&raw[idx + 1..])),
        None => (raw, None),
    };
    let message = message.trim_end_matches(',');
    let parent = if path == "." { "" } else { path };
    let join = |name: &str| {
        if parent.is_empty() {
            name.to_owned()
        } else {
            format!("{parent}.{name}")
        }
    };
    let with_position = |m: String| match position {
        Some(p) => format!("{m} ({p})"),
        None => m,
    };

    if let Some(rest) = message.strip_prefix("unknown field ") {
        let name = first_backticked(rest).unwrap_or_default();
        let expected = backticked_list(rest.split_once("expected").map_or("", |(_, e)| e));
        // serde_path_to_error reports unknown fields at the parent's path;
        // appending the key gives the path the user actually wrote.
        let field_path = if parent.ends_with(&format!(".{name}")) || parent == name {
            parent.to_owned()
        } else {
            join(&name)
        };
        let fix = match closest(&name, &expected) {
            Some(suggestion) => format!(
                "did you mean `{suggestion}`? Rename the field, or remove it{}",
                valid_list(&expected)
            ),
            None => format!("remove the field{}", valid_list(&expected)),
        };
        return ManifestError::Field {
            path: field_path,
            message: with_position("unknown field".to_owned()),
            fix,
        };
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        let name = first_backticked(rest).unwrap_or_default();
        let field_path = join(&name);
        return ManifestError::Field {
            fix: format!("add {field_path}"),
            path: field_path,
            message: with_position("is required but missing".to_owned()),
        };
    }
    let fix = if let Some((own_message, own_fix)) = message.split_once(". Fix: ") {
        // Custom deserializers in this crate phrase their errors with a fix.
        return ManifestError::Field {
            path: path.to_owned(),
            message: with_position(own_message.to_owned()),
            fix: own_fix.to_owned(),
        };
    } else if let Some(rest) = message.strip_prefix("unknown variant ") {
        let expected = backticked_list(rest.split_once("expected").map_or("", |(_, e)| e));
        format!("use one of: {}", expected.join(", "))
    } else if message.contains("invalid duration") {
        "write a whole number with a unit, e.g. 10s, 500ms, 5m or 1h30m".to_owned()
    } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
        format!("change {path} to the expected type; `kubectl explain streamjob.{path}` shows it")
    } else {
        format!("correct {path}")
    };
    ManifestError::Field {
        path: if path == "." {
            "(document)".to_owned()
        } else {
            path.to_owned()
        },
        message: with_position(message.to_owned()),
        fix,
    }
}

fn first_backticked(s: &str) -> Option<String> {
    let start = s.find('`')? + 1;
    let len = s[start..].find('`')?;
    Some(s[start..start + len].to_owned())
}

fn backticked_list(s: &str) -> Vec<String> {
    s.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

fn valid_list(expected: &[String]) -> String {
    if expected.is_empty() {
        String::new()
    } else {
        format!("; valid fields here: {}", expected.join(", "))
    }
}

/// The expected name closest to `name`, if it is close enough to be a typo.
fn closest<'a>(name: &str, expected: &'a [String]) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    expected
        .iter()
        .map(|e| (edit_distance(&lower, &e.to_ascii_lowercase()), e))
        .filter(|(d, e)| *d <= 2.max(e.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("paralelism", "parallelism"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn closest_name() {
        let names: Vec<String> = ["program", "parallelism", "maxParallelism"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(closest("paralelism", &names), Some("parallelism"));
        assert_eq!(closest("zzz", &names), None);
    }
}
