//! The report of a run: `results.json` (verdict, anomaly counts and examples, stats) and
//! `report.html` (verdict on top, latency and throughput over time as SVG, fault windows
//! shaded, anomaly table), next to `history.jsonl`.
//!
//! Must never: change the verdict; it only renders what the checker decided.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde_json::{Value, json};

use crate::checker::{COUNTED, Results};
use crate::history::{Event, Kind, Process};

/// One completed client operation.
struct Op {
    start_s: f64,
    latency_ms: f64,
    f: String,
    kind: Kind,
}

fn ops(history: &[Event]) -> Vec<Op> {
    let mut pending: HashMap<&Process, &Event> = HashMap::new();
    let mut out = Vec::new();
    for e in history {
        if matches!(e.process, Process::Named(_)) {
            continue;
        }
        if e.kind == Kind::Invoke {
            pending.insert(&e.process, e);
        } else if let Some(inv) = pending.remove(&e.process) {
            out.push(Op {
                start_s: inv.time_ns as f64 / 1e9,
                latency_ms: (e.time_ns.saturating_sub(inv.time_ns)) as f64 / 1e6,
                f: e.f.clone(),
                kind: e.kind,
            });
        }
    }
    out
}

/// Fault windows `(start s, end s, label)` from the nemesis's start/stop events.
fn windows(history: &[Event], end_s: f64) -> Vec<(f64, f64, String)> {
    let mut out = Vec::new();
    let mut open: Option<(f64, String)> = None;
    for e in history
        .iter()
        .filter(|e| matches!(&e.process, Process::Named(n) if n == "nemesis"))
    {
        let t = e.time_ns as f64 / 1e9;
        let label = e.value["fault"].as_str().unwrap_or("fault").to_owned();
        match e.f.as_str() {
            "start" => open = Some((t, label)),
            "stop" => {
                if let Some((s, l)) = open.take() {
                    out.push((s, t, l));
                }
            }
            _ => {}
        }
    }
    if let Some((s, l)) = open {
        out.push((s, end_s, l));
    }
    out
}

fn color(kind: Kind) -> RGBColor {
    match kind {
        Kind::Ok => RGBColor(40, 150, 60),
        Kind::Fail => RGBColor(200, 60, 60),
        _ => RGBColor(230, 160, 30),
    }
}

type Plot = Result<(), Box<dyn std::error::Error>>;

fn latency_svg(
    ops: &[Op],
    wins: &[(f64, f64, String)],
    end_s: f64,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 380)).into_drawing_area();
        root.fill(&WHITE)?;
        let max_lat = ops.iter().map(|o| o.latency_ms).fold(1.0, f64::max) * 1.2;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Latency of each operation (ms, log scale)",
                ("sans-serif", 16),
            )
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..end_s.max(1.0), (0.05f64..max_lat).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .y_desc("latency (ms)")
            .draw()?;
        shade(&mut chart, wins, 0.05, max_lat)?;
        for (f, size) in [("send", 2), ("poll", 1), ("commit", 1)] {
            chart.draw_series(ops.iter().filter(|o| o.f == f).map(|o| {
                Circle::new(
                    (o.start_s, o.latency_ms.max(0.05)),
                    size,
                    color(o.kind).filled(),
                )
            }))?;
        }
        root.present()?;
    }
    Ok(svg)
}

fn shade<DB: DrawingBackend, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    wins: &[(f64, f64, String)],
    lo: f64,
    hi: f64,
) -> Plot
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
    DB::ErrorType: 'static,
{
    chart
        .draw_series(wins.iter().map(|(a, b, _)| {
            Rectangle::new(
                [(*a, lo), (*b, hi)],
                RGBColor(240, 120, 120).mix(0.18).filled(),
            )
        }))
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn throughput_svg(
    ops: &[Op],
    wins: &[(f64, f64, String)],
    end_s: f64,
) -> Result<String, Box<dyn std::error::Error>> {
    let secs = end_s.ceil().max(1.0) as usize;
    let mut per_sec: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for f in ["send", "poll"] {
        per_sec.insert(f, vec![0.0; secs + 1]);
    }
    for o in ops.iter().filter(|o| o.kind == Kind::Ok) {
        if let Some(v) = per_sec.get_mut(o.f.as_str()) {
            let i = (o.start_s as usize).min(secs);
            v[i] += 1.0;
        }
    }
    let max = per_sec.values().flatten().fold(1.0f64, |a, &b| a.max(b)) * 1.2;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 300)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Throughput of successful operations (per second)",
                ("sans-serif", 16),
            )
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..end_s.max(1.0), 0f64..max)?;
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .y_desc("ops/s")
            .draw()?;
        shade(&mut chart, wins, 0.0, max)?;
        for (f, c) in [
            ("send", RGBColor(40, 90, 200)),
            ("poll", RGBColor(120, 120, 120)),
        ] {
            chart
                .draw_series(LineSeries::new(
                    per_sec[f]
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (i as f64 + 0.5, *v)),
                    c.stroke_width(2),
                ))?
                .label(f)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 15, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Writes `results.json` and `report.html` into `dir`.
pub fn write(dir: &Path, history: &[Event], results: &Results, run: &Value) -> anyhow::Result<()> {
    let counts: BTreeMap<&str, usize> = results
        .anomalies
        .iter()
        .map(|(k, a)| (k.as_str(), a.count))
        .collect();
    let json = json!({
        "valid": results.valid,
        "counts": counts,
        "anomalies": results.anomalies,
        "stats": results.stats,
        "run": run,
    });
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;

    let ops = ops(history);
    let end_s = history.last().map_or(1.0, |e| e.time_ns as f64 / 1e9);
    let wins = windows(history, end_s);
    let latency =
        latency_svg(&ops, &wins, end_s).map_err(|e| anyhow::anyhow!("latency plot: {e}"))?;
    let throughput =
        throughput_svg(&ops, &wins, end_s).map_err(|e| anyhow::anyhow!("throughput plot: {e}"))?;
    let mut html = String::new();
    let (verdict, bg) = if results.valid {
        ("VALID: no anomalies", "#2a7a3a")
    } else {
        ("INVALID: anomalies found", "#b02a2a")
    };
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=utf-8><title>raftmq-jepsen report</title>\
         <style>body{{font-family:sans-serif;margin:24px;max-width:1040px}}\
         .verdict{{color:#fff;background:{bg};padding:14px 18px;font-size:22px;border-radius:6px}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}\
         .bad{{background:#fbe3e3}} pre{{white-space:pre-wrap;font-size:12px;margin:0}}</style></head><body>\
         <div class=verdict>{verdict}</div>"
    );
    let _ = write!(
        html,
        "<h3>Run</h3><pre>{}</pre>",
        escape(&serde_json::to_string_pretty(run)?)
    );
    let _ = write!(
        html,
        "<h3>Operations</h3><pre>{}</pre>",
        escape(&serde_json::to_string_pretty(&results.stats)?)
    );
    html.push_str("<h3>Anomalies</h3><table><tr><th>anomaly</th><th>count</th><th>counts against validity</th><th>examples</th></tr>");
    for (name, a) in &results.anomalies {
        let counted = COUNTED.contains(&name.as_str());
        let class = if counted && a.count > 0 {
            " class=bad"
        } else {
            ""
        };
        let examples: Vec<String> = a.examples.iter().map(|e| escape(&e.to_string())).collect();
        let _ = write!(
            html,
            "<tr{class}><td>{name}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
            a.count,
            if counted { "yes" } else { "no (allowed)" },
            examples.join("\n")
        );
    }
    html.push_str("</table><h3>Latency</h3><p>Green ok, red fail, orange info (unknown). Shaded: fault windows.</p>");
    html.push_str(&latency);
    html.push_str("<h3>Throughput</h3>");
    html.push_str(&throughput);
    html.push_str("<h3>Faults</h3><table><tr><th>from (s)</th><th>to (s)</th><th>fault</th></tr>");
    for (a, b, l) in &wins {
        let _ = write!(
            html,
            "<tr><td>{a:.1}</td><td>{b:.1}</td><td>{}</td></tr>",
            escape(l)
        );
    }
    html.push_str("</table><p>Full history: <code>history.jsonl</code>; results: <code>results.json</code>.</p></body></html>");
    std::fs::write(dir.join("report.html"), html)?;
    Ok(())
}
