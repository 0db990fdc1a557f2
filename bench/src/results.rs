//! What a scenario reports, and the table printed at the end.

use serde::Serialize;

/// A goal from issue 5, checked against a figure (never a reason to fail).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Goal {
    /// The figure's ratio (to the baseline, or to its own reference) is at least `min`.
    RatioAtLeast { min: f64 },
    /// The figure itself is at most `max` (in its unit).
    AtMost { max: f64 },
    /// The figure's ratio to the reference named `of` is at most `max`.
    RatioAtMost { max: f64, of: &'static str },
    /// The figure's ratio to the reference named `of` is at least `min`.
    RatioOfAtLeast { min: f64, of: &'static str },
}

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub label: String,
    pub value: f64,
    pub unit: String,
    pub ratio: Option<f64>,
    pub goal: Option<Goal>,
    pub met: Option<bool>,
}

impl Figure {
    pub fn new(label: &str, value: f64, unit: &str) -> Self {
        Self {
            label: label.into(),
            value,
            unit: unit.into(),
            ratio: None,
            goal: None,
            met: None,
        }
    }

    pub fn ratio(self, r: f64) -> Self {
        self.with_ratio(Some(r))
    }

    pub fn with_ratio(mut self, r: Option<f64>) -> Self {
        self.ratio = r;
        self.check();
        self
    }

    pub fn goal(mut self, g: Goal) -> Self {
        self.goal = Some(g);
        self.check();
        self
    }

    fn check(&mut self) {
        self.met = match self.goal {
            Some(Goal::RatioAtLeast { min }) => self.ratio.map(|r| r >= min),
            Some(Goal::AtMost { max }) => Some(self.value <= max),
            Some(Goal::RatioAtMost { max, .. }) => self.ratio.map(|r| r <= max),
            Some(Goal::RatioOfAtLeast { min, .. }) => self.ratio.map(|r| r >= min),
            None => None,
        };
    }

    pub fn value_text(&self) -> String {
        let v = self.value;
        match self.unit.as_str() {
            "ms" => format!("{v:.2} ms"),
            "MB" => format!("{v:.1} MB"),
            "×" => format!("{v:.2}"),
            // `+ 0.0`: a tiny negative prints as 0.00, not -0.00.
            "s" => format!("{:.2} s", (v * 100.0).round() / 100.0 + 0.0),
            "%" => format!("{v:.0} %"),
            u => format!("{} {u}", thousands(v.round() as u64)),
        }
    }

    pub fn goal_text(&self) -> String {
        match self.goal {
            Some(Goal::RatioAtLeast { min }) if self.unit == "×" => format!("≥ {min}"),
            Some(Goal::RatioAtLeast { min }) => format!("≥ {min} × baseline"),
            Some(Goal::AtMost { max }) => format!("≤ {max} {}", self.unit),
            Some(Goal::RatioAtMost { max, of }) => format!("≤ {max} × {of}"),
            Some(Goal::RatioOfAtLeast { min, of }) => format!("≥ {min} × {of}"),
            None => "-".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ServerNumbers {
    pub idle_rss_mb: f64,
    pub peak_rss_mb: f64,
    /// utime + stime over the server's whole life (setup, load, drain until stopped).
    pub cpu_s: f64,
    /// On PostgreSQL: the CPU the PostgreSQL server's processes used meanwhile (all of
    /// them: the machine runs nothing else against it during a run).
    pub db_cpu_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub what: String,
    pub figures: Vec<Figure>,
    pub server: Option<ServerNumbers>,
    /// CPU the harness itself (API clients and receiver) used during the scenario.
    pub harness_cpu_s: f64,
    pub wall_s: f64,
    pub charts: Vec<String>,
    pub details: serde_json::Value,
    pub error: Option<String>,
}

impl ScenarioResult {
    pub fn new(name: &str, what: String) -> Self {
        Self {
            name: name.into(),
            what,
            figures: vec![],
            server: None,
            harness_cpu_s: 0.0,
            wall_s: 0.0,
            charts: vec![],
            details: serde_json::Value::Null,
            error: None,
        }
    }
}

/// `1234567` → `1 234 567`
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    let mut cut = match s.len() % 3 {
        0 => 3,
        r => r,
    };
    for (i, ch) in s.chars().enumerate() {
        if i == cut {
            out.push(' ');
            cut += 3;
        }
        out.push(ch);
    }
    out
}

const HEADER: [&str; 9] = [
    "scenario",
    "figure",
    "value",
    "ratio",
    "goal",
    "met",
    "peak RSS MB",
    "CPU s",
    "harness CPU s",
];

fn rows(results: &[ScenarioResult]) -> Vec<[String; 9]> {
    let mut rows = Vec::new();
    for r in results {
        let rss = r
            .server
            .map(|s| format!("{:.1}", s.peak_rss_mb))
            .unwrap_or_else(|| "-".into());
        let cpu = r
            .server
            .map(|s| match s.db_cpu_s {
                Some(db) => format!("{:.1} + db {db:.1}", s.cpu_s),
                None => format!("{:.1}", s.cpu_s),
            })
            .unwrap_or_else(|| "-".into());
        let harness = format!("{:.1}", r.harness_cpu_s);
        if let Some(e) = &r.error {
            let first = e.lines().next().unwrap_or_default();
            rows.push([
                r.name.clone(),
                format!("ERROR: {first}"),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                rss,
                cpu,
                harness,
            ]);
            continue;
        }
        for (i, f) in r.figures.iter().enumerate() {
            let first = i == 0;
            rows.push([
                if first { r.name.clone() } else { String::new() },
                f.label.clone(),
                f.value_text(),
                f.ratio
                    .map(|x| format!("{x:.2}"))
                    .unwrap_or_else(|| "-".into()),
                f.goal_text(),
                match f.met {
                    Some(true) => "met".into(),
                    Some(false) => "NOT met".into(),
                    None => "-".into(),
                },
                if first { rss.clone() } else { String::new() },
                if first { cpu.clone() } else { String::new() },
                if first {
                    harness.clone()
                } else {
                    String::new()
                },
            ]);
        }
    }
    rows
}

/// The table for the terminal, columns aligned.
pub fn text_table(results: &[ScenarioResult]) -> String {
    let rows = rows(results);
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(&HEADER.map(String::from));
    out.push('\n');
    out.push_str(&line(&widths.map(|w| "-".repeat(w))));
    out.push('\n');
    for row in &rows {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}

/// The same table in Markdown.
pub fn markdown_table(results: &[ScenarioResult]) -> String {
    let mut out = format!("| {} |\n", HEADER.join(" | "));
    out.push_str(&format!("|{}\n", "---|".repeat(HEADER.len())));
    for row in rows(results) {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_are_checked() {
        let f = Figure::new("x", 100.0, "msg/s")
            .with_ratio(Some(0.4))
            .goal(Goal::RatioAtLeast { min: 0.35 });
        assert_eq!(f.met, Some(true));
        let f = Figure::new("x", 2.5, "ms").goal(Goal::AtMost { max: 2.0 });
        assert_eq!(f.met, Some(false));
        assert_eq!(f.goal_text(), "≤ 2 ms");
        let f = Figure::new("x", 1.0, "msg/s").goal(Goal::RatioAtLeast { min: 0.2 });
        assert_eq!(f.met, None, "no baseline, no verdict");
        let f = Figure::new("x", 330.0, "us/msg")
            .ratio(1.12)
            .goal(Goal::RatioAtMost {
                max: 1.1,
                of: "1 node",
            });
        assert_eq!(f.met, Some(false));
        assert_eq!(f.goal_text(), "≤ 1.1 × 1 node");
        assert_eq!(Figure::new("x", -0.5, "s").value_text(), "-0.50 s");
        assert_eq!(Figure::new("x", -1e-5, "s").value_text(), "0.00 s");
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1 000");
        assert_eq!(thousands(1234567), "1 234 567");
    }
}
