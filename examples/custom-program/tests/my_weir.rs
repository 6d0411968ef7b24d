//! The custom binary end to end: it lists its own program next to the built-in ones and runs the
//! word-count manifest to completion.

// Helpers of a test crate are test code too; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};

fn my_weir(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_my-weir"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn lists_its_program_with_the_builtin_ones() {
    let out = my_weir(&["programs"]);
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.lines().any(|l| l == "word-count"), "{s}");
    assert!(s.lines().any(|l| l == "orders"), "{s}");
}

#[test]
fn runs_word_count_to_the_end() {
    let m = "examples/custom-program/word-count.yaml";
    let out = my_weir(&["validate", m]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = my_weir(&["run", m, "--rest-address", "127.0.0.1:0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("FINISHED"), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    // The text has "to" twice and is fed in twice.
    assert_eq!(stdout.lines().last(), Some("question 2"), "{stdout}");
    assert!(stdout.lines().any(|l| l == "to 4"), "{stdout}");
}
