//! Unit tests of the benchmark's arithmetic.

use super::report::*;

fn sample(n: usize, mib_s: f64) -> Sample {
    Sample {
        connections: n,
        bytes: 1 << 30,
        seconds: 1024.0 / mib_s,
        first_byte_seconds: Some(0.01),
        cpu_seconds: 1.0,
        connections_opened: n,
    }
}

fn report(samples: &[Sample]) -> Report {
    let rows = rows(samples);
    let (best, recommended) = recommend(&rows).unwrap();
    Report {
        schema: SCHEMA,
        ftpseg_version: "test",
        url: "ftp://h/f".into(),
        bytes_per_run: 1 << 30,
        discard: false,
        rows,
        best,
        recommended,
    }
}

#[test]
fn recommends_the_fewest_connections_near_the_best() {
    let r = rows(&[
        sample(1, 20.0),
        sample(2, 40.0),
        sample(4, 78.0),
        sample(8, 80.0),
        sample(16, 79.0),
    ]);
    assert_eq!(recommend(&r), Some((8, 4)));
    // A flat curve: one connection is enough.
    let r = rows(&[sample(1, 100.0), sample(4, 103.0)]);
    assert_eq!(recommend(&r), Some((4, 1)));
    assert_eq!(recommend(&[]), None);
}

#[test]
fn median_run_per_count_in_first_seen_order() {
    let r = rows(&[
        sample(4, 50.0),
        sample(1, 10.0),
        sample(4, 70.0),
        sample(1, 12.0),
        sample(4, 60.0),
        sample(1, 11.0),
    ]);
    assert_eq!(r.iter().map(|r| r.connections).collect::<Vec<_>>(), [4, 1]);
    assert!((r[0].mib_per_second - 60.0).abs() < 1e-9);
    assert!((r[1].mib_per_second - 11.0).abs() < 1e-9);
    assert_eq!(r[0].runs.len(), 3);
}

#[test]
fn table_json_and_chart_carry_every_count() {
    let rep = report(&[sample(1, 20.0), sample(2, 39.0), sample(4, 41.0)]);
    let t = table(&rep);
    assert_eq!(t.lines().count(), 5, "{t}");
    assert!(t.contains("recommended: -n 2"), "{t}");
    let json: serde_json::Value = serde_json::to_value(&rep).unwrap();
    assert_eq!(json["recommended"], 2);
    assert_eq!(json["rows"].as_array().unwrap().len(), 3);
    assert_eq!(json["schema"], SCHEMA);
    assert_eq!(json["discard"], false);
    let svg = svg_chart(&rep);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<circle").count(), 3);
    assert_eq!(
        svg.matches("#d1242f").count(),
        1,
        "the recommended point is marked"
    );
    // One count only: no division by zero in the axis.
    let one = svg_chart(&report(&[sample(8, 10.0)]));
    assert!(!one.contains("NaN") && !one.contains("inf"), "{one}");
}
