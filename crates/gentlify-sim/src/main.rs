//! `gentlify-sim`: run scenarios and compare throttles, or serve the simulated API.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, Subcommand};
use gentlify_sim::{contenders, footnotes, run_scenario, table, write_json, write_svg, Scenario};
use indicatif::{ProgressBar, ProgressStyle};

/// Simulated rate-limited LLM API and throttle comparison.
#[derive(Debug, Parser)]
#[command(name = "gentlify-sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// A scenario name, a path to a scenario TOML file, or `all`.
    scenario: Option<String>,
    /// Where to write `<scenario>.json` and `<scenario>.svg`.
    #[arg(long, default_value = "sim-out", global = true)]
    out: PathBuf,
    /// Use each scenario's reduced request count (as the tests do).
    #[arg(long, global = true)]
    quick: bool,
    /// Only run contenders whose name contains this.
    #[arg(long, global = true)]
    only: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every scenario.
    All,
    /// List the scenarios.
    List,
    /// Serve a scenario's API over HTTP on loopback.
    Serve {
        /// Scenario name or file.
        scenario: String,
        /// Loopback address to bind.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
    },
}

fn find(name: &str) -> Result<Scenario, String> {
    let path = std::path::Path::new(name);
    if path.extension().is_some_and(|e| e == "toml") {
        return Scenario::load(path).map_err(|e| e.to_string());
    }
    Scenario::builtin()
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| format!("no scenario named {name:?} (try `list`)"))
}

fn main() -> Result<(), String> {
    let cli = Cli::parse();
    let scenarios = match (&cli.command, &cli.scenario) {
        (Some(Command::List), _) => {
            for s in Scenario::builtin() {
                println!("{:<24} {}", s.name, s.description);
            }
            return Ok(());
        }
        (Some(Command::Serve { scenario, addr }), _) => {
            let sc = find(scenario)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            return rt.block_on(async {
                let (bound, server) = gentlify_sim::serve(*addr, sc)
                    .await
                    .map_err(|e| e.to_string())?;
                eprintln!("serving on http://{bound}/v1/chat/completions (Ctrl-C to stop)");
                server.await.map_err(|e| e.to_string())
            });
        }
        (Some(Command::All), _) => Scenario::builtin(),
        (None, Some(name)) if name == "all" => Scenario::builtin(),
        (None, Some(name)) => vec![find(name)?],
        (None, None) => return Err("give a scenario name, `all`, `list` or `serve`".into()),
    };
    let scenarios: Vec<Scenario> = if cli.quick {
        scenarios.into_iter().map(Scenario::reduced).collect()
    } else {
        scenarios
    };
    let mut list = contenders();
    if let Some(only) = &cli.only {
        list.retain(|c| c.name.contains(only.as_str()));
    }

    let total = (scenarios.len() * list.len()) as u64;
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").expect("valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let wall = Instant::now();
    for sc in &scenarios {
        let report = run_scenario(sc, &list, |name| {
            bar.set_message(format!("{} / {name}", sc.name));
            bar.inc(1);
        });
        let slowest = report
            .runs
            .iter()
            .max_by(|a, b| a.wall_s.total_cmp(&b.wall_s))
            .map(|r| format!("{} {:.3} s", r.figures.contender, r.wall_s))
            .unwrap_or_default();
        let wall_s: f64 = report.runs.iter().map(|r| r.wall_s).sum();
        bar.suspend(|| {
            println!("{}", table(&report));
            println!(
                "wall time: {wall_s:.2} s for {} runs (slowest: {slowest})\n",
                report.runs.len()
            );
        });
        write_json(&report, &cli.out).map_err(|e| e.to_string())?;
        write_svg(&report, &cli.out).map_err(|e| e.to_string())?;
    }
    bar.finish_and_clear();
    println!("{}", footnotes(&list));
    println!(
        "{} scenario(s) x {} contender(s) in {:.1} s wall time; figures and plots in {}/",
        scenarios.len(),
        list.len(),
        wall.elapsed().as_secs_f64(),
        cli.out.display()
    );
    Ok(())
}
