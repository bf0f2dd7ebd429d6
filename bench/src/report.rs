//! The report of a run: figures against their targets, per-scenario tables of every pair, the runs
//! that had errors (any fails the run), the machine and its load; written as JSON (everything) and
//! Markdown (for BENCHMARKS.md).

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::procfs::Machine;

/// One figure held against a target.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub scenario: &'static str,
    pub figure: String,
    pub value: f64,
    pub unit: &'static str,
    pub target: &'static str,
    /// `None`: informational, or not measurable in this run.
    pub met: Option<bool>,
    /// Smallest and largest per-pass value (the figure is their median).
    pub range: Option<(f64, f64)>,
}

impl Check {
    pub fn new(scenario: &'static str, figure: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Self { scenario, figure: figure.into(), value, unit, target: "", met: None, range: None }
    }

    /// The median of per-pass `values`, keeping their range.
    pub fn over(
        scenario: &'static str,
        figure: impl Into<String>,
        values: &[f64],
        unit: &'static str,
    ) -> Self {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
        let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut check = Self::new(scenario, figure, crate::stats::median(&finite), unit);
        if finite.len() > 1 {
            check.range = Some((min, max));
        }
        check
    }

    /// Scales the figure and its range (µs → ms).
    pub fn scaled(mut self, factor: f64) -> Self {
        self.value *= factor;
        self.range = self.range.map(|(a, b)| (a * factor, b * factor));
        self
    }

    /// Holds the figure to `target` (its text) with `met`.
    pub fn target(mut self, target: &'static str, met: bool) -> Self {
        self.target = target;
        self.met = Some(met && self.value.is_finite());
        self
    }
}

/// One scenario's results.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub id: &'static str,
    pub title: &'static str,
    pub checks: Vec<Check>,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub notes: Vec<String>,
    /// Runs of this scenario that had errors.
    pub errors: Vec<RunErrors>,
    /// Every run's raw result.
    pub raw: Value,
}

/// A run with errors: which one, how many, and the first.
#[derive(Debug, Clone, Serialize)]
pub struct RunErrors {
    /// Pass and target, e.g. `stateless pass 1 via proxy`.
    pub run: String,
    pub count: u64,
    pub first: String,
}

impl Section {
    pub fn new(id: &'static str, title: &'static str, header: &[&str]) -> Self {
        Self {
            id,
            title,
            checks: Vec::new(),
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
            errors: Vec::new(),
            raw: Value::Array(Vec::new()),
        }
    }

    /// Records the errors of `run` (none: nothing to record).
    pub fn count_errors(&mut self, run: impl Into<String>, count: u64, first: Option<&str>) {
        if count > 0 {
            let first = first.unwrap_or("(no text)").to_owned();
            self.errors.push(RunErrors { run: run.into(), count, first });
        }
    }

    pub fn push_raw(&mut self, value: Value) {
        if let Value::Array(items) = &mut self.raw {
            items.push(value);
        }
    }
}

/// Load average of the machine around the run.
#[derive(Debug, Clone, Serialize)]
pub struct Load {
    pub before: f64,
    pub during_min: f64,
    pub during_median: f64,
    pub during_max: f64,
    pub after: f64,
    /// CPU pressure (`some avg10`, %) sampled during the run: median and largest.
    pub cpu_pressure_median: f64,
    pub cpu_pressure_max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub started_unix: u64,
    pub seconds: f64,
    pub commit: Option<String>,
    pub command: String,
    pub machine: Machine,
    pub load: Load,
    pub pinning: String,
    pub settings: Value,
    pub sections: Vec<Section>,
}

/// Formats a figure for tables.
pub fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "–".to_owned()
    } else if v.abs() >= 100.0 || (v.fract() == 0.0 && v.abs() < 1e15) {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Report {
    /// Every run with errors, as `scenario: run: N errors, first: …` lines.
    pub fn errors(&self) -> Vec<String> {
        self.sections
            .iter()
            .flat_map(|s| {
                s.errors
                    .iter()
                    .map(move |e| format!("{}: {}: {} errors, first: {:?}", s.id, e.run, e.count, e.first))
            })
            .collect()
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(md, "# mcpgw benchmark report ({})\n", self.mode);
        let _ = writeln!(md, "- command: `{}`", self.command);
        if let Some(commit) = &self.commit {
            let _ = writeln!(md, "- commit: `{commit}`");
        }
        let _ = writeln!(
            md,
            "- machine: {} × {}, {} GiB RAM, Linux {}, open files {}/{}",
            m.cpus, m.cpu_model, m.mem_total_gib, m.kernel, m.nofile_soft, m.nofile_hard
        );
        let l = &self.load;
        let _ = writeln!(
            md,
            "- load average (1 min): {} before, {} / {} / {} (min / median / max) during, {} after",
            fmt(l.before),
            fmt(l.during_min),
            fmt(l.during_median),
            fmt(l.during_max),
            fmt(l.after)
        );
        let _ = writeln!(
            md,
            "- CPU pressure (/proc/pressure/cpu some avg10): {} % median, {} % max during the run",
            fmt(l.cpu_pressure_median),
            fmt(l.cpu_pressure_max)
        );
        let _ = writeln!(md, "- pinning: {}", self.pinning);
        let _ = writeln!(md, "- duration: {:.0} s\n", self.seconds);
        let errors = self.errors();
        if errors.is_empty() {
            let _ = writeln!(md, "No run had errors (failed requests, non-2xx answers, JSON-RPC errors).\n");
        } else {
            let _ = writeln!(md, "## Errors: the run failed\n");
            for line in &errors {
                let _ = writeln!(md, "- {line}");
            }
            let _ = writeln!(md);
        }
        let _ = writeln!(md, "## Targets\n\nMedians over the measured passes; [smallest … largest pass].\n");
        let _ = writeln!(md, "| scenario | figure | value | target | met |\n|---|---|---|---|---|");
        for c in self.sections.iter().flat_map(|s| &s.checks) {
            let met = match c.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            };
            let target = if c.target.is_empty() { "(info)" } else { c.target };
            let _ = writeln!(
                md,
                "| {} | {} | {} {}{} | {} | {} |",
                c.scenario,
                c.figure,
                fmt(c.value),
                c.unit,
                c.range.map_or(String::new(), |(a, b)| format!(" [{} … {}]", fmt(a), fmt(b))),
                target,
                met
            );
        }
        for s in &self.sections {
            let _ = writeln!(md, "\n## {}. {}\n", s.id, s.title);
            if !s.header.is_empty() {
                let _ = writeln!(md, "| {} |", s.header.join(" | "));
                let _ = writeln!(md, "|{}", "---|".repeat(s.header.len()));
                for row in &s.rows {
                    let _ = writeln!(md, "| {} |", row.join(" | "));
                }
            }
            for note in &s.notes {
                let _ = writeln!(md, "\n{note}");
            }
        }
        md
    }
}
