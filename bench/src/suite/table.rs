//! The suite's table: one row per figure, one column per server with the
//! median and the range over the rounds, and a ratio column of
//! secure-chat against each other server. Markdown, so that the same text
//! reads in a terminal and in a file.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// How a figure's values are summed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A number: median, range, ratio.
    Number,
    /// `yes` or `no`: how many rounds said yes.
    YesNo,
}

/// One row of the table: a key of one measurement's `RESULT` line.
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    /// What the row says, for people.
    pub label: &'static str,
    /// The `RESULT` key.
    pub key: &'static str,
    /// How it is summed up.
    pub kind: Kind,
}

/// What one round of one measurement on one server gave.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The `RESULT` line's keys and values; `None` if there was none.
    pub fields: Option<BTreeMap<String, String>>,
}

impl Outcome {
    /// True if the run ended with `status=ok`.
    pub fn ok(&self) -> bool {
        self.value("status") == Some("ok")
    }

    /// The value of `key`, if the line had it.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.fields.as_ref()?.get(key).map(String::as_str)
    }
}

/// Everything one server gave for one measurement.
#[derive(Debug, Clone, Default)]
pub struct Column {
    /// Each round's outcome.
    pub rounds: Vec<Outcome>,
    /// Why the measurement was not run on this server, if it was not.
    pub skipped: Option<String>,
}

/// A table row's worth of numbers for one server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The median.
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// How many rounds gave a value.
    pub count: usize,
}

/// Median, min and max of `values`; `None` if empty.
pub fn summarise(values: &[f64]) -> Option<Summary> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Some(Summary {
        median,
        min: sorted[0],
        max: sorted[n - 1],
        count: n,
    })
}

/// A number with as many decimals as its size deserves.
pub fn number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

impl Column {
    /// The numbers of `key` over the rounds.
    fn numbers(&self, key: &str) -> Vec<f64> {
        self.rounds
            .iter()
            .filter_map(|round| round.value(key)?.parse::<f64>().ok())
            .collect()
    }

    /// True if some round did not end with `status=ok`.
    fn troubled(&self) -> bool {
        self.rounds.iter().any(|round| !round.ok())
    }

    /// The cell for `figure`.
    fn cell(&self, figure: &Figure) -> String {
        if self.skipped.is_some() {
            return "skipped".to_string();
        }
        let mark = if self.troubled() { " *" } else { "" };
        match figure.kind {
            Kind::Number => match summarise(&self.numbers(figure.key)) {
                Some(s) if s.count > 1 && s.min != s.max => format!(
                    "{} ({}–{}){mark}",
                    number(s.median),
                    number(s.min),
                    number(s.max)
                ),
                Some(s) => format!("{}{mark}", number(s.median)),
                None => format!("–{mark}"),
            },
            Kind::YesNo => {
                let answers: Vec<&str> = self
                    .rounds
                    .iter()
                    .filter_map(|round| round.value(figure.key))
                    .collect();
                let yes = answers.iter().filter(|&&a| a == "yes").count();
                match (yes, answers.len()) {
                    (_, 0) => format!("–{mark}"),
                    (y, n) if y == n => format!("yes{mark}"),
                    (0, _) => format!("no{mark}"),
                    (y, n) => format!("{y}/{n} yes{mark}"),
                }
            }
        }
    }

    /// The median of `figure`, for a ratio.
    fn median(&self, figure: &Figure) -> Option<f64> {
        if self.skipped.is_some() || figure.kind != Kind::Number {
            return None;
        }
        summarise(&self.numbers(figure.key)).map(|s| s.median)
    }
}

/// One measurement's rows.
pub struct Section<'a> {
    /// The measurement's title, put before each figure's label.
    pub title: &'a str,
    /// Its rows.
    pub figures: &'a [Figure],
    /// One column per server, in the order of `peers`.
    pub columns: Vec<&'a Column>,
}

/// The whole table in Markdown. The first server is the one the ratio
/// columns compare against the others.
pub fn render(peers: &[&str], sections: &[Section]) -> String {
    let mut out = String::new();
    let mut header = vec!["figure".to_string()];
    header.extend(peers.iter().map(|p| p.to_string()));
    let base = peers.first().copied().unwrap_or("");
    for other in peers.iter().skip(1) {
        header.push(format!("{base} ÷ {other}"));
    }
    row(&mut out, &header);
    let rule: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(i, _)| if i == 0 { "---" } else { "--:" }.to_string())
        .collect();
    row(&mut out, &rule);
    for section in sections {
        for figure in section.figures {
            let mut cells = vec![format!("{}: {}", section.title, figure.label)];
            cells.extend(section.columns.iter().map(|column| column.cell(figure)));
            let base = section.columns.first().and_then(|c| c.median(figure));
            for other in section.columns.iter().skip(1) {
                let ratio = match (base, other.median(figure)) {
                    (Some(a), Some(b)) if b != 0.0 => format!("{:.2}×", a / b),
                    _ => "–".to_string(),
                };
                cells.push(ratio);
            }
            row(&mut out, &cells);
        }
    }
    out
}

/// Appends one Markdown table row.
fn row(out: &mut String, cells: &[String]) {
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(pairs: &[(&str, &str)]) -> Outcome {
        Outcome {
            fields: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        }
    }

    #[test]
    fn medians_and_ranges() {
        let s = summarise(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.count), (2.0, 1.0, 3.0, 3));
        assert_eq!(summarise(&[1.0, 2.0]).unwrap().median, 1.5);
        assert!(summarise(&[]).is_none());
        assert_eq!(number(1234.5), "1234");
        assert_eq!(number(0.4567), "0.457");
    }

    #[test]
    fn a_table_with_a_ratio_and_a_troubled_round() {
        const FIGURES: [Figure; 2] = [
            Figure {
                label: "µs per delivery",
                key: "us",
                kind: Kind::Number,
            },
            Figure {
                label: "complete",
                key: "done",
                kind: Kind::YesNo,
            },
        ];
        let ours = Column {
            rounds: vec![
                outcome(&[("us", "1.0"), ("done", "yes"), ("status", "ok")]),
                outcome(&[("us", "3.0"), ("done", "no"), ("status", "lost")]),
            ],
            skipped: None,
        };
        let theirs = Column {
            rounds: vec![outcome(&[("us", "4.0"), ("done", "yes"), ("status", "ok")])],
            skipped: None,
        };
        let skipped = Column {
            rounds: Vec::new(),
            skipped: Some("too many clients".into()),
        };
        let table = render(
            &["secure-chat", "go-hub", "ncat"],
            &[Section {
                title: "fanout",
                figures: &FIGURES,
                columns: vec![&ours, &theirs, &skipped],
            }],
        );
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "| figure | secure-chat | go-hub | ncat | secure-chat ÷ go-hub | secure-chat ÷ ncat |"
        );
        assert_eq!(
            lines[2],
            "| fanout: µs per delivery | 2.00 (1.00–3.00) * | 4.00 | skipped | 0.50× | – |"
        );
        assert_eq!(
            lines[3],
            "| fanout: complete | 1/2 yes * | yes | skipped | – | – |"
        );
    }
}
