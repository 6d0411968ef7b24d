//! Duration parsing and formatting: the text form users write in manifests.

use weir_api::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn parses_and_formats_in_shortest_form() {
    // (input, parsed value, canonical output)
    let cases: &[(&str, Duration, &str)] = &[
        ("0s", Duration::ZERO, "0s"),
        ("0ms", Duration::ZERO, "0s"),
        ("500ms", ms(500), "500ms"),
        ("1500ms", ms(1_500), "1500ms"),
        ("1s500ms", ms(1_500), "1500ms"),
        ("10s", ms(10_000), "10s"),
        ("90s", ms(90_000), "90s"),
        ("1m30s", ms(90_000), "90s"),
        ("5m", ms(300_000), "5m"),
        ("60m", ms(3_600_000), "1h"),
        ("1h", ms(3_600_000), "1h"),
        ("1h30m", ms(5_400_000), "90m"),
        ("1h30m1s", ms(5_401_000), "5401s"),
        ("1d2h3m4s5ms", ms(93_784_005), "1d2h3m4s5ms"),
        ("2d", ms(172_800_000), "2d"),
        ("36h", ms(129_600_000), "36h"),
        ("1d1ms", ms(86_400_001), "1d1ms"),
        (
            "250us",
            Duration(std::time::Duration::from_micros(250)),
            "250us",
        ),
        (
            "15ns",
            Duration(std::time::Duration::from_nanos(15)),
            "15ns",
        ),
        ("007s", ms(7_000), "7s"),
    ];
    for (input, value, canonical) in cases {
        let parsed: Duration = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(parsed, *value, "{input}");
        assert_eq!(parsed.to_string(), *canonical, "{input}");
        let reparsed: Duration = canonical.parse().unwrap();
        assert_eq!(reparsed, *value, "{canonical} must round-trip");
    }
}

#[test]
fn formatting_round_trips_for_many_values() {
    let mut n: u64 = 1;
    while n < u64::MAX / 7 {
        let d = Duration(std::time::Duration::from_nanos(n));
        assert_eq!(d.to_string().parse::<Duration>().unwrap(), d, "{n}ns");
        n = n * 7 + 3;
    }
}

#[test]
fn rejects_malformed_durations() {
    let cases: &[(&str, &str)] = &[
        ("10", "expected a number with a unit, e.g. 10s, 500ms, 5m"),
        ("", "expected a number with a unit"),
        ("s", "expected a number with a unit"),
        ("ten seconds", "expected a number with a unit"),
        (
            "10x",
            "unknown unit \"x\" (valid units: ns, us, ms, s, m, h, d)",
        ),
        ("10sec", "unknown unit \"sec\""),
        ("1.5s", "e.g. 1500ms instead of 1.5s"),
        ("1h 30m", "remove the spaces"),
        ("-5s", "cannot be negative"),
        ("5s10", "expected a number with a unit"),
        ("99999999999999999999999d", "too large"),
    ];
    for (input, reason) in cases {
        let err = input.parse::<Duration>().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("invalid duration \"{input}\": ")),
            "{err}"
        );
        assert!(err.contains(reason), "{input}: {err}");
    }
}

#[test]
fn serde_uses_the_text_form() {
    let d: Duration = serde_json::from_str("\"1m30s\"").unwrap();
    assert_eq!(serde_json::to_string(&d).unwrap(), "\"90s\"");
    let err = serde_yaml::from_str::<Duration>("10")
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid duration \"10\""), "{err}");
    let err = serde_json::from_str::<Duration>("10")
        .unwrap_err()
        .to_string();
    assert!(err.contains("duration"), "{err}");
}
