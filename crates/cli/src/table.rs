//! Plain aligned tables, as operators know them from `cilium ... list`.

pub fn print(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            for line in c.lines() {
                widths[i] = widths[i].max(line.len());
            }
        }
    }
    let fmt_row = |cells: &[String]| {
        // A cell may hold several lines (labels): continue them underneath.
        let height = cells.iter().map(|c| c.lines().count().max(1)).max().unwrap_or(1);
        let mut out = Vec::new();
        for l in 0..height {
            let line: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{:<w$}", c.lines().nth(l).unwrap_or(""), w = widths[i]))
                .collect();
            out.push(line.join("   ").trim_end().to_string());
        }
        out.join("\n")
    };
    println!("{}", fmt_row(&headers.iter().map(|h| h.to_string()).collect::<Vec<_>>()));
    for r in rows {
        println!("{}", fmt_row(r));
    }
}
