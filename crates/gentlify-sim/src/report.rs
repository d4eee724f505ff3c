//! Reports: the comparison table, the JSON figures and the SVG plot.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::contenders::Contender;
use crate::run::ScenarioReport;

/// The comparison table of one scenario, as text.
pub fn table(report: &ScenarioReport) -> String {
    let mut out = String::new();
    let o = &report.oracle;
    let cap = report.runs.first().map_or(0, |r| r.figures.cap);
    let _ = writeln!(
        out,
        "== {} ({} requests; oracle {:.2} req/s, bound: {}; C = {}, oracle concurrency {})",
        report.scenario, report.requests, o.goodput_rps, o.bound, cap, o.concurrency
    );
    let _ = writeln!(
        out,
        "{:<26} {:>9} {:>9} {:>6} {:>7} {:>8} {:>8} {:>13} {:>8} {:>9} {:>6} {:>7}",
        "contender",
        "good/orc",
        "429s/1k",
        "lost",
        "failed",
        "att/req",
        "p99 s",
        "peak/C",
        "early",
        "settle s",
        "fair",
        "limit^"
    );
    for run in &report.runs {
        let f = &run.figures;
        let failed: u64 = f.failed.values().sum();
        let settle = f
            .settling_s
            .map_or_else(|| "-".to_string(), |s| format!("{s:.1}"));
        let _ = writeln!(
            out,
            "{:<26} {:>9.3} {:>9.1} {:>6} {:>7} {:>8.2} {:>8.2} {:>13} {:>8} {:>9} {:>6.3} {:>7}",
            f.contender,
            f.goodput_ratio,
            f.overloads_per_1000,
            f.lost,
            failed,
            f.attempts_per_request,
            f.p99_s,
            format!("{}/{} {:.2}", f.peak_concurrency, f.cap, f.peak_over_cap),
            f.sent_before_retry_after,
            settle,
            f.fairness,
            f.peak_limit
                .map_or_else(|| "-".to_string(), |l| format!("{l:.0}")),
        );
    }
    out
}

/// The footnotes of the table: how each peer was configured, and the peers left out.
pub fn footnotes(contenders: &[Contender]) -> String {
    let mut out = String::from("Notes:\n");
    for c in contenders.iter().filter(|c| !c.note.is_empty()) {
        let _ = writeln!(out, "  {}: {}", c.name, c.note);
    }
    for line in [
        "left out: tower-resilience's circuit breaker (its open state is timed with \
         std::time::Instant, which the paused clock cannot advance: once open it would stay \
         open for 30 s of wall time, i.e. the rest of a simulated run).",
        "tower, tower-acc and the congestion-limiter adapter release their permit when the \
         response headers arrive, not when a streamed body ends (as tower's limit middleware \
         does); a streamed body keeps its place in the API's C until it ends.",
        "columns: good/orc = completed work / the oracle's work over the same virtual duration \
         (work in mean requests: weighted by tokens when TPM binds, by service time when C \
         binds); 429s/1k = 429+503+529 per 1000 attempts; early = attempts sent before a \
         retry-after received by the same client had expired; peak/C = highest concurrency \
         requested of the API / C at start, then the highest ratio of requested concurrency \
         to the C in force; settle = longest settling time after a capacity step (s); fair = \
         Jain's index of per-client goodput; limit^ = highest client-side limit the contender \
         reported (summed over clients).",
    ] {
        let _ = writeln!(out, "  {line}");
    }
    out
}

/// Writes `<dir>/<scenario>.json` (figures, oracle, timelines).
pub fn write_json(report: &ScenarioReport, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(format!("{}.json", report.scenario)), text)
}

/// Writes `<dir>/<scenario>.svg`: one panel per contender with the hidden capacity, the API's
/// in-flight count, the client-side limit, and the 429/503/529 answers marked.
pub fn write_svg(report: &ScenarioReport, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.svg", report.scenario));
    let rows = report.runs.len().div_ceil(2).max(1);
    let root = SVGBackend::new(&path, (1400, 260 * rows as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((rows, 2));
    for (run, area) in report.runs.iter().zip(panels.iter()) {
        let tl = &run.timeline;
        let t_max = tl.samples.last().map_or(1.0, |s| s.0).max(1.0);
        let y_max = tl
            .samples
            .iter()
            .map(|s| (s.1 as f64).max(s.2 as f64).max(s.3))
            .fold(1.0, f64::max)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!(
                    "{} — goodput/oracle {:.2}",
                    run.figures.contender, run.figures.goodput_ratio
                ),
                ("sans-serif", 16),
            )
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(36)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("s")
            .max_light_lines(2)
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                tl.samples.iter().map(|s| (s.0, s.2 as f64)),
                BLACK.stroke_width(2),
            ))?
            .label("capacity C")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK));
        chart
            .draw_series(LineSeries::new(
                tl.samples.iter().map(|s| (s.0, s.1 as f64)),
                BLUE,
            ))?
            .label("API in flight")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
        if tl.samples.iter().any(|s| s.3 > 0.0) {
            chart
                .draw_series(LineSeries::new(
                    tl.samples.iter().map(|s| (s.0, s.3)),
                    GREEN.stroke_width(2),
                ))?
                .label("client limit")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], GREEN));
        }
        // 429/503/529 answers, binned per sample interval so the file stays small.
        chart
            .draw_series(
                tl.overloads
                    .iter()
                    .map(|(t, _)| Circle::new((*t, y_max * 0.03), 2, RED.filled())),
            )?
            .label("429/503/529")
            .legend(|(x, y)| Circle::new((x + 8, y), 2, RED.filled()));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
