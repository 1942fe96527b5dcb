//! Go's flag value syntax, which the legacy binaries' command lines use: `strconv.ParseBool`
//! and `time.ParseDuration`.

use std::time::Duration;

/// pflag's normalisation, as the legacy kube-dns and sidecar binaries apply it: `--dns_port` is
/// `--dns-port`. Single-dash long flags (`-v=2`) are accepted too. argv\[0\], `--` and values
/// are left alone.
pub fn normalize_pflag_args<I, S>(args: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    args.into_iter()
        .map(Into::into)
        .enumerate()
        .map(|(index, arg)| {
            if index == 0 || arg == "--" || !arg.starts_with('-') {
                return arg;
            }
            let body = arg.trim_start_matches('-');
            let (name, value) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (body, None),
            };
            let name = name.replace('_', "-");
            match value {
                Some(value) => format!("--{name}={value}"),
                None => format!("--{name}"),
            }
        })
        .collect()
}

/// A flag value Go's parsers would reject; the message quotes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoFlagError {
    #[error("{0:?} is not a boolean")]
    NotABool(String),
    #[error("{0:?} is not a duration such as 10s, 500ms or 1m30s")]
    NotADuration(String),
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Result<bool, GoFlagError> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(GoFlagError::NotABool(other.to_owned())),
    }
}

/// Go's `time.ParseDuration` (`300ms`, `1.5h`, `2h45m`, `0`).
pub fn parse_go_duration(s: &str) -> Result<Duration, GoFlagError> {
    let bad = || GoFlagError::NotADuration(s.to_owned());
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if number_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_values() {
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("2h45m"), Ok(Duration::from_secs(9900)));
        assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("s").is_err());
        assert!(parse_go_duration("").is_err());
        assert_eq!(parse_go_bool("T"), Ok(true));
        assert_eq!(parse_go_bool("0"), Ok(false));
        assert!(parse_go_bool("yes").is_err());
    }
}
