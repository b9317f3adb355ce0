//! The suite's tables: one row per figure, one column per server with the
//! median and the range over the rounds, and a ratio column of the first
//! server against each other one; then every round's figures and ratios.
//! Markdown, so that the same text reads in a terminal and in a file.

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

    /// The number of `key` in each round, `None` where a round gave none.
    fn per_round(&self, key: &str) -> Vec<Option<f64>> {
        self.rounds
            .iter()
            .map(|round| {
                let value = round.value(key)?.parse::<f64>().ok()?;
                value.is_finite().then_some(value)
            })
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

/// Round-by-round ratios of `base` to `other` for `figure`: round r of one
/// over round r of the other, which ran back to back. `None` for a round
/// either lacks, and for every round of a skipped column.
fn round_ratios(base: &Column, other: &Column, figure: &Figure) -> Vec<Option<f64>> {
    if base.skipped.is_some() || other.skipped.is_some() || figure.kind != Kind::Number {
        return Vec::new();
    }
    base.per_round(figure.key)
        .into_iter()
        .zip(other.per_round(figure.key))
        .map(|pair| match pair {
            (Some(a), Some(b)) if b != 0.0 => Some(a / b),
            _ => None,
        })
        .collect()
}

/// The median of `base` over the median of `other`, the ratio the issue's
/// targets are stated in.
fn median_ratio(base: &Column, other: &Column, figure: &Figure) -> Option<f64> {
    match (base.median(figure), other.median(figure)) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

/// The ratio of the medians, then the range of the round-by-round ratios
/// when there is one: `0.51× (0.45–0.60)`.
fn ratio_cell(base: &Column, other: &Column, figure: &Figure) -> String {
    let Some(ratio) = median_ratio(base, other, figure) else {
        return "–".to_string();
    };
    let rounds: Vec<f64> = round_ratios(base, other, figure)
        .into_iter()
        .flatten()
        .collect();
    match summarise(&rounds) {
        Some(s) if s.count > 1 && s.min != s.max => {
            format!("{ratio:.2}× ({:.2}–{:.2})", s.min, s.max)
        }
        _ => format!("{ratio:.2}×"),
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
            if let Some(base) = section.columns.first() {
                for other in section.columns.iter().skip(1) {
                    cells.push(ratio_cell(base, other, figure));
                }
            }
            row(&mut out, &cells);
        }
    }
    out
}

/// Every round: for each figure, a row per server with its value in each
/// of `rounds` rounds (`*` where that run reported problems), the median and
/// the range; then, for numbers, a row per ratio of the first server to
/// another with the round-by-round ratios, the ratio of the medians (as in
/// [`render`]) and the range of the round-by-round ones.
pub fn render_rounds(peers: &[&str], sections: &[Section], rounds: usize) -> String {
    let mut out = String::new();
    let mut header = vec!["figure".to_string(), "server".to_string()];
    header.extend((1..=rounds).map(|r| format!("round {r}")));
    header.extend(["median".to_string(), "min–max".to_string()]);
    row(&mut out, &header);
    let mut rule = vec!["---".to_string(); 2];
    rule.resize(header.len(), "--:".to_string());
    row(&mut out, &rule);
    let base_name = peers.first().copied().unwrap_or("");
    for section in sections {
        for figure in section.figures {
            let label = format!("{}: {}", section.title, figure.label);
            for (peer, column) in peers.iter().zip(&section.columns) {
                let mut cells = vec![label.clone(), peer.to_string()];
                if column.skipped.is_some() {
                    cells.resize(header.len(), "skipped".to_string());
                    row(&mut out, &cells);
                    continue;
                }
                for r in 0..rounds {
                    let cell = match column.rounds.get(r) {
                        Some(round) => {
                            let mark = if round.ok() { "" } else { " *" };
                            let value = match (figure.kind, round.value(figure.key)) {
                                (Kind::Number, Some(v)) => match v.parse::<f64>() {
                                    Ok(v) if v.is_finite() => number(v),
                                    _ => v.to_string(),
                                },
                                (Kind::YesNo, Some(v)) => v.to_string(),
                                (_, None) => "–".to_string(),
                            };
                            format!("{value}{mark}")
                        }
                        None => "–".to_string(),
                    };
                    cells.push(cell);
                }
                let summary = match figure.kind {
                    Kind::Number => summarise(&column.numbers(figure.key)),
                    Kind::YesNo => None,
                };
                match summary {
                    Some(s) => {
                        cells.push(number(s.median));
                        cells.push(format!("{}–{}", number(s.min), number(s.max)));
                    }
                    None => cells.extend(["–".to_string(), "–".to_string()]),
                }
                row(&mut out, &cells);
            }
            let Some(base) = section.columns.first() else {
                continue;
            };
            if figure.kind != Kind::Number {
                continue;
            }
            for (peer, other) in peers.iter().zip(&section.columns).skip(1) {
                let mut cells = vec![label.clone(), format!("{base_name} ÷ {peer}")];
                let ratios = round_ratios(base, other, figure);
                for r in 0..rounds {
                    cells.push(match ratios.get(r).copied().flatten() {
                        Some(ratio) => format!("{ratio:.2}×"),
                        None => "–".to_string(),
                    });
                }
                cells.push(match median_ratio(base, other, figure) {
                    Some(ratio) => format!("{ratio:.2}×"),
                    None => "–".to_string(),
                });
                let spread: Vec<f64> = ratios.into_iter().flatten().collect();
                cells.push(match summarise(&spread) {
                    Some(s) => format!("{:.2}–{:.2}×", s.min, s.max),
                    None => "–".to_string(),
                });
                row(&mut out, &cells);
            }
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

    const RATE: [Figure; 1] = [Figure {
        label: "lines/s",
        key: "rate",
        kind: Kind::Number,
    }];

    fn rates(values: &[&str]) -> Column {
        Column {
            rounds: values
                .iter()
                .map(|v| outcome(&[("rate", v), ("status", "ok")]))
                .collect(),
            skipped: None,
        }
    }

    #[test]
    fn a_ratio_shows_how_far_it_moved_between_rounds() {
        // Round by round: 1.0, 0.5, 3.0; of the medians: 2 / 2 = 1.
        let ours = rates(&["2", "1", "3"]);
        let theirs = rates(&["2", "2", "1"]);
        let table = render(
            &["a", "b"],
            &[Section {
                title: "t",
                figures: &RATE,
                columns: vec![&ours, &theirs],
            }],
        );
        assert_eq!(
            table.lines().nth(2).unwrap(),
            "| t: lines/s | 2.00 (1.00–3.00) | 2.00 (1.00–2.00) | 1.00× (0.50–3.00) |"
        );
    }

    #[test]
    fn every_round_has_its_cell() {
        let ours = rates(&["2", "1", "3"]);
        let mut theirs = rates(&["2", "2"]);
        theirs
            .rounds
            .push(outcome(&[("rate", "4"), ("status", "lost")]));
        let skipped = Column {
            rounds: Vec::new(),
            skipped: Some("too big".into()),
        };
        let table = render_rounds(
            &["a", "b", "c"],
            &[Section {
                title: "t",
                figures: &RATE,
                columns: vec![&ours, &theirs, &skipped],
            }],
            3,
        );
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "| figure | server | round 1 | round 2 | round 3 | median | min–max |"
        );
        assert_eq!(
            lines[2],
            "| t: lines/s | a | 2.00 | 1.00 | 3.00 | 2.00 | 1.00–3.00 |"
        );
        assert_eq!(
            lines[3],
            "| t: lines/s | b | 2.00 | 2.00 | 4.00 * | 2.00 | 2.00–4.00 |"
        );
        assert_eq!(
            lines[4],
            "| t: lines/s | c | skipped | skipped | skipped | skipped | skipped |"
        );
        assert_eq!(
            lines[5],
            "| t: lines/s | a ÷ b | 1.00× | 0.50× | 0.75× | 1.00× | 0.50–1.00× |"
        );
        assert_eq!(lines[6], "| t: lines/s | a ÷ c | – | – | – | – | – |");
        assert_eq!(lines.len(), 7);
    }
}
