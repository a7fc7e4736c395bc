//! Per-part timings of `up`.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Named durations, in the order they were measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Timings {
    pub parts: Vec<(String, f64)>,
}

impl Timings {
    /// Runs `f`, records how long it took under `name`, and prints it.
    pub fn time<T>(&mut self, name: &str, f: impl FnOnce() -> T) -> T {
        let t0 = Instant::now();
        let out = f();
        self.add(name, t0.elapsed());
        out
    }

    pub fn add(&mut self, name: &str, d: Duration) {
        eprintln!("lab: {name}: {}", crate::util::secs(d));
        self.parts.push((name.to_string(), d.as_secs_f64()));
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.parts.iter().find(|(n, _)| n == name).map(|(_, s)| *s)
    }

    /// A small table, one part a line.
    pub fn table(&self) -> String {
        let width = self.parts.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (name, s) in &self.parts {
            out.push_str(&format!("  {name:<width$}  {s:>7.1} s\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_parts() {
        let mut t = Timings::default();
        t.add("apt", Duration::from_millis(1500));
        t.add("total", Duration::from_secs(3));
        let table = t.table();
        assert!(table.contains("apt"));
        assert!(table.contains("1.5 s"));
        assert_eq!(t.get("total"), Some(3.0));
    }
}
