//! The benchmark's rows and their Markdown table.

use serde::Serialize;

/// One attack against one server.
#[derive(Debug, Serialize)]
pub struct Row {
    pub attack: String,
    pub server: String,
    /// Peak resident memory while the attack ran (a forking server's children included).
    pub peak_rss_mib: f64,
    /// The container's memory limit in the manifest.
    pub limit: String,
    /// The well-behaved client's questions, and those answered correctly in time.
    pub good_asked: usize,
    pub good_answered: usize,
    /// Its slowest exchange, answered or not (0: not measured).
    pub good_slowest_ms: u128,
    /// What the attacker got.
    pub attacker: String,
}

/// The rows as a Markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| attack (one client) | server | peak RSS | limit | well-behaved client answered | what the attacker got |\n\
         |---|---|---|---|---|---|\n",
    );
    for row in rows {
        let slowest = if row.good_slowest_ms > 0 {
            format!(" (slowest {} ms)", row.good_slowest_ms)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "| {} | {} | {:.1} MiB | {} | {}/{}{slowest} | {} |\n",
            row.attack,
            row.server,
            row.peak_rss_mib,
            row.limit,
            row.good_answered,
            row.good_asked,
            row.attacker
        ));
    }
    out
}
