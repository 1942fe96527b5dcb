//! The Prometheus text format for unlabelled families: every binary writes its small, fixed set
//! of metrics directly.

use std::fmt::Write;

/// One unlabelled family: `# HELP`, `# TYPE` (`counter` or `gauge`) and its sample.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    );
}

/// One counter.
pub fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    family(out, name, "counter", help, value);
}

/// One gauge.
pub fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    family(out, name, "gauge", help, value);
}
