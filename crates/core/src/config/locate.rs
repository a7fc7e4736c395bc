//! Where a key is written in the file, for errors that name a line and column.

/// 1-based line and column of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Every key of the document with the byte offset where it is written.
fn all_keys(text: &str) -> Vec<(usize, String)> {
    fn walk(table: &toml::de::DeTable<'_>, prefix: &str, out: &mut Vec<(usize, String)>) {
        for (key, value) in table.iter() {
            let path =
                if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
            out.push((key.span().start, path.clone()));
            if let Some(inner) = value.get_ref().as_table() {
                walk(inner, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(doc) = toml::de::DeTable::parse(text) {
        walk(doc.get_ref(), "", &mut out);
    }
    out
}

/// The dotted key written at, or last before, `offset`.
pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
    // An error about a whole table points at its header.
    if let Some(header) = text.get(offset..).and_then(|rest| rest.strip_prefix('[')) {
        let name = header.trim_start_matches('[').split(']').next().unwrap_or("").trim();
        if !name.is_empty() {
            return Some(name.to_owned());
        }
    }
    all_keys(text).into_iter().filter(|(start, _)| *start <= offset).max_by_key(|(start, _)| *start).map(|(_, k)| k)
}

/// Line and column of a dotted key, or of its nearest written parent.
pub(super) fn locate_key(text: &str, dotted: &str) -> Option<(usize, usize)> {
    let keys = all_keys(text);
    let mut wanted = dotted;
    loop {
        if let Some((offset, _)) = keys.iter().filter(|(_, k)| k == wanted).min_by_key(|(o, _)| *o) {
            return Some(line_col(text, *offset));
        }
        wanted = &wanted[..wanted.rfind('.')?];
    }
}
