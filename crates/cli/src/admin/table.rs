//! Aligned text columns for `--output table`.

/// A table: a header and rows of cells, printed with each column as wide as
/// its widest cell (counted in characters).
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|title| (*title).to_uppercase()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells print empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, each line ending with `\n`.
    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|t| t.chars().count()).collect();
        for row in &self.rows {
            for (index, cell) in row.iter().enumerate().take(columns) {
                widths[index] = widths[index].max(cell.chars().count());
            }
        }
        let mut text = String::new();
        let header_is_blank = self.header.iter().all(String::is_empty);
        let header = (!header_is_blank).then_some(&self.header);
        for row in header.into_iter().chain(&self.rows) {
            let mut line = String::new();
            for (index, width) in widths.iter().enumerate() {
                let cell = row.get(index).map_or("", String::as_str);
                line.push_str(cell);
                if index + 1 < columns {
                    let padding = width - cell.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', padding));
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }

    /// A two-column view of one record: field names and values.
    pub fn fields(pairs: &[(&str, String)]) -> Self {
        let mut table = Self {
            header: vec![String::new(), String::new()],
            rows: Vec::new(),
        };
        for (name, value) in pairs {
            table.row(vec![format!("{name}:"), value.clone()]);
        }
        table
    }

    /// Prints the table on stdout.
    #[allow(clippy::print_stdout)]
    pub fn print(&self) {
        print!("{}", self.render());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let mut table = Table::new(&["code", "price"]);
        table.row(vec!["gpu_seconds".into(), "0.0011".into()]);
        table.row(vec!["tokens".into(), "€1".into()]);
        assert_eq!(
            table.render(),
            "CODE         PRICE\ngpu_seconds  0.0011\ntokens       €1\n"
        );
    }
}
