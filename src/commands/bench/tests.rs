//! Unit tests of the benchmark's arithmetic.

use proptest::prelude::*;

use super::chart::*;
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
    report_of("ftp://h/f", samples)
}

fn report_of(url: &str, samples: &[Sample]) -> Report {
    let rows = rows(samples);
    let (best, recommended) = recommend(&rows).unwrap();
    Report {
        schema: SCHEMA,
        ftpseg_version: "test",
        url: url.into(),
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
    let svg = svg_chart(std::slice::from_ref(&rep));
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<circle").count(), 3);
    assert_eq!(
        svg.matches(r#"class="recommended""#).count(),
        1,
        "the recommended point is marked"
    );
    assert!(svg.contains(">-n 2</text>"), "and labelled: {svg}");
    // One count only: no division by zero in the axis.
    let one = svg_chart(&[report(&[sample(8, 10.0)])]);
    assert!(!one.contains("NaN") && !one.contains("inf"), "{one}");
}

/// The y-axis labels of a chart, in order.
fn y_ticks(svg: &str) -> Vec<String> {
    svg.split(r#"class="ytick">"#)
        .skip(1)
        .map(|t| t.split('<').next().unwrap().to_owned())
        .collect()
}

#[test]
fn the_chart_of_todays_example_has_round_ticks_and_a_reference_line() {
    // The chart of the issue had ticks at 15, 31, 46, 61 (quarters of the best rate).
    let rep = report(&[
        sample(1, 16.0),
        sample(2, 31.0),
        sample(4, 59.0),
        sample(8, 61.0),
    ]);
    let svg = svg_chart(std::slice::from_ref(&rep));
    assert_eq!(y_ticks(&svg), ["0", "20", "40", "60", "80"]);
    let xs: Vec<&str> = svg
        .split(r#"class="xtick">"#)
        .skip(1)
        .map(|t| t.split('<').next().unwrap())
        .collect();
    assert_eq!(xs, ["1", "2", "4", "8"], "x ticks at the measured counts");
    assert_eq!(svg.matches("<polyline").count(), 1);
    assert_eq!(svg.matches(r#"class="scaling""#).count(), 1);
    assert!(svg.contains("stroke-dasharray"));
    assert!(svg.contains(">-n 4</text>"), "{svg}");
}

#[test]
fn tick_choices_for_known_maxima() {
    assert_eq!(round_ticks(61.0), [0.0, 20.0, 40.0, 60.0, 80.0]);
    assert_eq!(round_ticks(60.0), [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]);
    assert_eq!(round_ticks(9.0), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
    assert_eq!(round_ticks(12.0), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0]);
    assert_eq!(round_ticks(14.0), [0.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0]);
    assert_eq!(round_ticks(0.3), [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]);
    assert_eq!(
        round_ticks(0.0),
        round_ticks(1.0),
        "nothing measured: 0 to 1"
    );
    assert_eq!(round_ticks(f64::NAN), round_ticks(1.0));
    assert_eq!(tick_label(2.5), "2.5");
    assert_eq!(tick_label(20.0), "20");
    assert_eq!(tick_label(0.1 + 0.2), "0.3");
    assert_eq!(tick_label(0.25), "0.25");
}

proptest! {
    #[test]
    fn ticks_are_round_cover_the_max_and_number_3_to_7(mant in 1.0f64..10.0, exp in -4i32..7) {
        let max = mant * 10f64.powi(exp);
        let ticks = round_ticks(max);
        prop_assert!((3..=7).contains(&ticks.len()), "{max}: {ticks:?}");
        prop_assert_eq!(ticks[0], 0.0);
        prop_assert!(*ticks.last().unwrap() >= max * (1.0 - 1e-9), "{max}: {ticks:?}");
        prop_assert!(ticks[ticks.len() - 2] < max, "no tick wasted above the max: {ticks:?}");
        let step = ticks[1];
        // The step is 1, 2, 2.5 or 5 times a power of ten ...
        let k = step.log10().floor();
        let m = step / 10f64.powf(k);
        prop_assert!(
            [1.0, 2.0, 2.5, 5.0, 10.0].iter().any(|r| (m - r).abs() < 1e-6),
            "step {step} of {max}"
        );
        // ... and every tick is a multiple of it, evenly spaced, with a short label.
        for (i, t) in ticks.iter().enumerate() {
            prop_assert!((t - i as f64 * step).abs() <= step * 1e-9, "{ticks:?}");
            prop_assert!(tick_label(*t).len() <= 12, "{}", tick_label(*t));
        }
    }

    #[test]
    fn the_scaling_line_is_n_times_one_stream_inside_the_plot(
        per in 0.1f64..100.0, to_exp in 0u32..7, ymax in 1.0f64..1000.0,
    ) {
        let to = f64::from(1u32 << to_exp);
        let pts = scaling_line(per, 1.0, to, ymax);
        if per > ymax {
            prop_assert!(pts.is_empty(), "starts above the plot");
            return Ok(());
        }
        let end = to.min(ymax / per);
        prop_assert_eq!(pts.len() == 1, end == 1.0, "one point only for one count: {:?}", pts);
        prop_assert!((pts[0].0 - 1.0).abs() < 1e-9);
        let last = pts.last().unwrap();
        prop_assert!((last.0 - end).abs() < 1e-9, "{last:?}");
        for w in pts.windows(2) {
            prop_assert!(w[1].0 > w[0].0, "increasing n");
        }
        for &(n, v) in &pts {
            prop_assert!(v <= ymax * (1.0 + 1e-12));
            prop_assert!((v - n * per).abs() <= 1e-9 * ymax, "n x single: {n} {v}");
        }
    }
}

fn two_mirrors() -> Vec<Mirror> {
    let slow = report_of(
        "ftp://slow/f",
        &[sample(1, 5.0), sample(2, 10.0), sample(4, 10.2)],
    );
    let mut fast = report_of(
        "ftp://fast/f",
        &[sample(1, 20.0), sample(2, 39.0), sample(4, 70.0)],
    );
    // The 1-connection run's first byte decides; the others are slower.
    fast.rows[0].runs[0].first_byte_seconds = Some(0.002);
    fast.rows[2].runs[0].first_byte_seconds = Some(0.5);
    vec![
        Mirror {
            url: "ftp://slow/f".into(),
            result: Ok(slow),
        },
        Mirror {
            url: "ftp://down/f".into(),
            result: Err("cannot connect to 10.0.0.9:21: Connection refused".into()),
        },
        Mirror {
            url: "ftp://fast/f".into(),
            result: Ok(fast),
        },
    ]
}

#[test]
fn mirrors_rank_by_best_throughput_with_the_failed_last() {
    let ranked = ranking(&two_mirrors());
    let urls: Vec<&str> = ranked.iter().map(|r| r.url.as_str()).collect();
    assert_eq!(urls, ["ftp://fast/f", "ftp://slow/f", "ftp://down/f"]);
    let fast = &ranked[0];
    assert!(fast.ok && fast.error.is_none());
    assert_eq!(fast.best_connections, Some(4));
    assert_eq!(fast.recommended, Some(4));
    assert!((fast.best_mib_per_second.unwrap() - 70.0).abs() < 1e-9);
    assert!((fast.single_stream_mib_per_second.unwrap() - 20.0).abs() < 1e-9);
    assert_eq!(
        fast.first_byte_seconds,
        Some(0.002),
        "the 1-connection runs"
    );
    assert_eq!(ranked[1].recommended, Some(2));
    assert!(!ranked[2].ok && ranked[2].best_mib_per_second.is_none());
    assert!(
        ranked[2]
            .error
            .as_deref()
            .unwrap()
            .contains("cannot connect")
    );

    let t = ranking_table(&ranked);
    assert_eq!(t.lines().count(), 4, "{t}");
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[1].trim_start().starts_with("1  ftp://fast/f"), "{t}");
    assert!(
        lines[1].contains("-n 4") && lines[1].contains("70.0"),
        "{t}"
    );
    assert!(lines[2].trim_start().starts_with("2  ftp://slow/f"), "{t}");
    assert!(lines[3].contains("failed: cannot connect"), "{t}");

    assert_eq!(
        suggestion(&ranked).unwrap(),
        "ftpseg -n 6 --max-connections-per-host 4 --mirror ftp://slow/f ftp://fast/f"
    );
}

#[test]
fn no_suggestion_without_a_measured_mirror_and_odd_urls_are_quoted() {
    let mut m = two_mirrors();
    m.retain(|m| m.result.is_err());
    assert_eq!(suggestion(&ranking(&m)), None);
    let mut m = two_mirrors();
    m[0].url = "ftp://h/my file's.iso".into();
    let cmd = suggestion(&ranking(&m)).unwrap();
    assert!(
        cmd.ends_with(r"--mirror 'ftp://h/my file'\''s.iso' ftp://fast/f"),
        "{cmd}"
    );
}

#[test]
fn first_byte_falls_back_to_every_run_without_a_single_stream() {
    let mut rep = report(&[sample(2, 10.0), sample(4, 10.0), sample(8, 10.0)]);
    for (row, t) in rep.rows.iter_mut().zip([0.3, 0.1, 0.2]) {
        row.runs[0].first_byte_seconds = Some(t);
    }
    assert_eq!(first_byte(&rep), Some(0.2));
    assert_eq!(single_stream(&rep), None);
    assert_eq!(
        per_stream(&rep),
        Some(5.0),
        "the smallest count's per connection"
    );
}

#[test]
fn the_mirrors_chart_has_a_line_a_reference_and_a_label_each() {
    let reports: Vec<Report> = two_mirrors()
        .into_iter()
        .filter_map(|m| m.result.ok())
        .collect();
    let svg = svg_chart(&reports);
    assert_eq!(svg.matches("<polyline").count(), 2);
    assert_eq!(svg.matches(r#"class="scaling""#).count(), 2);
    assert_eq!(svg.matches(r#"class="recommended""#).count(), 2);
    assert!(
        svg.contains(">-n 2</text>") && svg.contains(">-n 4</text>"),
        "{svg}"
    );
    assert!(
        svg.contains("ftp://slow/f") && svg.contains("ftp://fast/f"),
        "legend"
    );
    assert!(
        svg.contains("#1f6feb") && svg.contains("#d1242f"),
        "two colours"
    );
    assert_eq!(y_ticks(&svg), ["0", "20", "40", "60", "80"]);
    assert!(!svg.contains("NaN") && !svg.contains("inf"));
}

#[test]
fn the_mirrors_json_has_every_report_and_the_ranking() {
    let m = two_mirrors();
    let all = MirrorsReport {
        schema: SCHEMA,
        mirrors: m.iter().filter_map(|m| m.result.clone().ok()).collect(),
        ranking: ranking(&m),
    };
    let v = serde_json::to_value(&all).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["mirrors"].as_array().unwrap().len(), 2);
    assert_eq!(v["mirrors"][0]["url"], "ftp://slow/f", "in the order given");
    assert_eq!(v["mirrors"][0]["rows"].as_array().unwrap().len(), 3);
    let r = v["ranking"].as_array().unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r[0]["url"], "ftp://fast/f");
    assert_eq!(r[0]["recommended"], 4);
    assert_eq!(r[2]["ok"], false);
    assert!(r[2]["best_mib_per_second"].is_null());
    assert!(r[2]["error"].as_str().unwrap().contains("cannot connect"));
}
