//! Programs: named functions that build a dataflow from a [`StreamEnv`] and string arguments,
//! and the registry a `weir` binary chooses them from (`spec.job.program`, `spec.job.args`).
//!
//! The registry lives in the engine core so that users can build their own binary: depend on
//! the runtime as a library, register their programs next to (or instead of) the built-in ones,
//! and hand the registry to the `weir` command-line entry point.

use crate::stream::StreamEnv;
use std::collections::BTreeMap;
use std::str::FromStr;

/// Why a program could not build its dataflow.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    /// An argument is missing, malformed or out of range.
    #[error("spec.job.args.{name}: {message}")]
    BadArgument {
        /// Argument name.
        name: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// An argument the program does not know.
    #[error(
        "spec.job.args.{name}: unknown argument for program {program:?}; it accepts: {accepted}"
    )]
    UnknownArgument {
        /// Argument name.
        name: String,
        /// Program name.
        program: String,
        /// The names it accepts.
        accepted: String,
    },
    /// No program of that name is registered.
    #[error("spec.job.program: no program named {name:?}; this binary has: {available}")]
    UnknownProgram {
        /// Requested name.
        name: String,
        /// Registered names.
        available: String,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// A program's arguments (`spec.job.args`), with typed accessors that name the argument in
/// their errors.
#[derive(Debug, Clone, Default)]
pub struct ProgramArgs {
    args: BTreeMap<String, String>,
}

impl ProgramArgs {
    /// Wraps `spec.job.args`.
    pub fn new(args: BTreeMap<String, String>) -> Self {
        Self { args }
    }

    /// A string argument.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.args.get(name).map(String::as_str)
    }

    /// A parsed argument, or `default` when absent.
    pub fn get_or<T: FromStr>(&self, name: &str, default: T) -> Result<T, ProgramError>
    where
        T::Err: std::fmt::Display,
    {
        match self.args.get(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<T>()
                .map_err(|e| ProgramError::BadArgument {
                    name: name.to_string(),
                    message: format!("cannot parse {v:?}: {e}"),
                }),
        }
    }

    /// A duration argument such as `10s`, `500ms`, `5m`, `1h`, or `default` when absent.
    pub fn get_duration_or(
        &self,
        name: &str,
        default: std::time::Duration,
    ) -> Result<std::time::Duration, ProgramError> {
        match self.args.get(name) {
            None => Ok(default),
            Some(v) => parse_duration(v).ok_or_else(|| ProgramError::BadArgument {
                name: name.to_string(),
                message: format!(
                    "invalid duration {v:?}: use a number with a unit, e.g. 500ms, 10s, 5m, 1h"
                ),
            }),
        }
    }

    /// Fails on any argument not in `accepted`, so typos do not go unnoticed.
    pub fn check_known(&self, program: &str, accepted: &[&str]) -> Result<(), ProgramError> {
        for k in self.args.keys() {
            if !accepted.contains(&k.as_str()) {
                return Err(ProgramError::UnknownArgument {
                    name: k.clone(),
                    program: program.to_string(),
                    accepted: accepted.join(", "),
                });
            }
        }
        Ok(())
    }
}

/// Parses `500ms`, `10s`, `5m`, `1h`, `2d`, and combinations such as `1m30s`.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: u128 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        total += n * ms;
        rest = &rest[unit_len..];
    }
    Some(std::time::Duration::from_millis(u64::try_from(total).ok()?))
}

/// Builds a dataflow into the environment.
pub type BuildFn = fn(&StreamEnv, &ProgramArgs) -> Result<(), ProgramError>;

/// A named program.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    /// Name used in `spec.job.program`.
    pub name: &'static str,
    /// One line for `weir programs`.
    pub description: &'static str,
    /// Argument names and what they mean, for `weir programs`.
    pub args: &'static [(&'static str, &'static str)],
    /// Builds the dataflow.
    pub build: BuildFn,
}

impl Program {
    /// Builds the dataflow after rejecting unknown arguments.
    pub fn build(&self, env: &StreamEnv, args: &ProgramArgs) -> Result<(), ProgramError> {
        let names: Vec<&str> = self.args.iter().map(|(n, _)| *n).collect();
        args.check_known(self.name, &names)?;
        (self.build)(env, args)
    }
}

/// The programs a binary can run.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    programs: Vec<Program>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a program.
    pub fn register(&mut self, p: Program) -> &mut Self {
        self.programs.retain(|q| q.name != p.name);
        self.programs.push(p);
        self
    }

    /// The program named `name`.
    pub fn get(&self, name: &str) -> Result<&Program, ProgramError> {
        self.programs
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| ProgramError::UnknownProgram {
                name: name.to_string(),
                available: self.names().join(", "),
            })
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.programs.iter().map(|p| p.name).collect();
        v.sort_unstable();
        v
    }

    /// All programs.
    pub fn programs(&self) -> &[Program] {
        &self.programs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("ten s"), None);
    }

    #[test]
    fn argument_errors_name_the_argument() {
        let a = ProgramArgs::new(BTreeMap::from([("rate".to_string(), "fast".to_string())]));
        let e = a.get_or::<u64>("rate", 1).unwrap_err().to_string();
        assert!(e.starts_with("spec.job.args.rate:"), "{e}");
        let e = a.check_known("orders", &["keys"]).unwrap_err().to_string();
        assert!(e.contains("accepts: keys"), "{e}");
    }
}
