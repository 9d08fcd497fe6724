//! Walking one TOML layer with toml_edit: where each key and value sits, typed reads, and the problems reported against them; knows no key names.

use std::ops::Range;

use toml_edit::{ImDocument, Item, TableLike, Value};

use super::DEFAULT_ORIGIN;

/// Where a value came from: the built-in defaults or the user's file, and its line.
#[derive(Debug, Clone, Copy)]
pub(super) struct Loc<'a> {
    pub(super) origin: &'a str,
    pub(super) line: Option<usize>,
    pub(super) user: bool,
}

impl Loc<'_> {
    /// Of two locations involved in one problem, the one to blame: the first unless only the
    /// second was written by the user.
    pub(super) fn blame<'a>(first: Loc<'a>, second: Loc<'a>) -> Loc<'a> {
        if first.user || !second.user {
            first
        } else {
            second
        }
    }
}

/// One problem before it becomes a [`ConfigError`](super::ConfigError).
pub(super) struct Problem<'a> {
    pub(super) loc: Loc<'a>,
    pub(super) key: String,
    pub(super) message: String,
}

/// The state of one key after reading the defaults and the user's file.
#[derive(Default)]
pub(super) enum Slot<'a, T> {
    /// No layer set it.
    #[default]
    Missing,
    /// A layer set it to a bad value (already reported): skip cross-key checks on it.
    Invalid,
    Set(T, Loc<'a>),
}

impl<'a, T> Slot<'a, T> {
    pub(super) fn put(&mut self, value: Option<T>, loc: Loc<'a>) {
        *self = match value {
            Some(value) => Slot::Set(value, loc),
            None => Slot::Invalid,
        };
    }

    pub(super) fn get(&self) -> Option<(&T, Loc<'a>)> {
        match self {
            Slot::Set(value, loc) => Some((value, *loc)),
            Slot::Missing | Slot::Invalid => None,
        }
    }

    /// The value, reporting a key that no layer set (only possible if the defaults lack it).
    pub(super) fn take(self, key: &str, problems: &mut Vec<Problem<'a>>) -> Option<T> {
        match self {
            Slot::Set(value, _) => Some(value),
            Slot::Invalid => None,
            Slot::Missing => {
                problems.push(Problem {
                    loc: Loc {
                        origin: DEFAULT_ORIGIN,
                        line: None,
                        user: false,
                    },
                    key: key.to_string(),
                    message: "missing, and the built-in defaults have no value for it".into(),
                });
                None
            }
        }
    }
}

/// A TOML item or an array element: what a key's value can be.
#[derive(Clone, Copy)]
pub(super) enum Node<'d> {
    Item(&'d Item),
    Value(&'d Value),
}

impl<'d> Node<'d> {
    pub(super) fn value(self) -> Option<&'d Value> {
        match self {
            Node::Item(item) => item.as_value(),
            Node::Value(value) => Some(value),
        }
    }

    pub(super) fn table_like(self) -> Option<&'d dyn TableLike> {
        match self {
            Node::Item(item) => item.as_table_like(),
            Node::Value(value) => value.as_inline_table().map(|t| t as &dyn TableLike),
        }
    }

    pub(super) fn type_name(self) -> &'static str {
        match self {
            Node::Item(item) => item.type_name(),
            Node::Value(value) => value.type_name(),
        }
    }
}

/// One table of an array of tables: (index in the array, the table, where it starts).
pub(super) type TableEntry<'a, 'd> = (usize, &'d dyn TableLike, Loc<'a>);

/// One key (or array element) being read: its dotted path, its value and where both are.
pub(super) struct Field<'a, 'd> {
    pub(super) path: String,
    pub(super) node: Node<'d>,
    /// The key's line (unknown-key errors point here).
    pub(super) key_loc: Loc<'a>,
    /// The value's line, falling back to the key's (value errors point here).
    pub(super) value_loc: Loc<'a>,
}

/// Reads one TOML text (one layer) into [`Raw`](super::schema::Raw), reporting problems as it goes.
pub(super) struct Reader<'a, 'p> {
    origin: &'a str,
    text: &'a str,
    user: bool,
    problems: &'p mut Vec<Problem<'a>>,
}

impl<'a, 'p> Reader<'a, 'p> {
    pub(super) fn new(
        origin: &'a str,
        text: &'a str,
        user: bool,
        problems: &'p mut Vec<Problem<'a>>,
    ) -> Self {
        Reader {
            origin,
            text,
            user,
            problems,
        }
    }

    pub(super) fn loc(&self, span: Option<Range<usize>>) -> Loc<'a> {
        Loc {
            origin: self.origin,
            line: span.map(|s| line_at(self.text.as_bytes(), s.start)),
            user: self.user,
        }
    }

    pub(super) fn report(&mut self, loc: Loc<'a>, key: &str, message: String) {
        self.problems.push(Problem {
            loc,
            key: key.to_string(),
            message,
        });
    }

    /// Parses the whole text; a syntax error is reported alone (nothing after it can be read
    /// reliably), and then there is no document.
    pub(super) fn document(&mut self) -> Option<ImDocument<&'a str>> {
        match ImDocument::parse(self.text) {
            Ok(doc) => Some(doc),
            Err(e) => {
                let loc = self.loc(e.span());
                let message = e.message().trim().replace('\n', "; ");
                self.report(loc, "", format!("TOML syntax error: {message}"));
                None
            }
        }
    }

    /// The field for `name` in `table`, whose own path is `parent` ("" for the root).
    pub(super) fn field<'d>(
        &self,
        table: &'d dyn TableLike,
        parent: &str,
        name: &str,
        item: &'d Item,
    ) -> Field<'a, 'd> {
        let key_loc = self.loc(table.get_key_value(name).and_then(|(k, _)| k.span()));
        let value_loc = match item.span() {
            Some(span) => self.loc(Some(span)),
            None => key_loc,
        };
        let shown = show_key(name);
        Field {
            path: if parent.is_empty() {
                shown
            } else {
                format!("{parent}.{shown}")
            },
            node: Node::Item(item),
            key_loc,
            value_loc,
        }
    }

    /// Reports an unknown key or table, listing the known ones.
    pub(super) fn unknown(&mut self, f: &Field<'a, '_>, expected: &[&str]) {
        let what = if f.node.table_like().is_some()
            || matches!(f.node, Node::Item(Item::ArrayOfTables(_)))
        {
            "unknown table"
        } else {
            "unknown key"
        };
        let message = format!("{what} (expected one of: {})", expected.join(", "));
        self.report(f.key_loc, &f.path, message);
    }

    /// Reports `Err` at the field's value; passes `Ok` through.
    pub(super) fn check<T>(&mut self, f: &Field<'a, '_>, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.report(f.value_loc, &f.path, message);
                None
            }
        }
    }

    pub(super) fn wrong_type<T>(&mut self, f: &Field<'a, '_>, expected: &str) -> Option<T> {
        let message = format!("expected {expected}, found {}", f.node.type_name());
        self.report(f.value_loc, &f.path, message);
        None
    }

    pub(super) fn table<'d>(&mut self, f: &Field<'a, 'd>) -> Option<&'d dyn TableLike> {
        match f.node.table_like() {
            Some(table) => Some(table),
            None => self.wrong_type(f, "a table"),
        }
    }

    pub(super) fn string<'d>(&mut self, f: &Field<'a, 'd>) -> Option<&'d str> {
        match f.node.value().and_then(Value::as_str) {
            Some(s) => Some(s),
            None => self.wrong_type(f, "a string"),
        }
    }

    pub(super) fn boolean(&mut self, f: &Field<'a, '_>) -> Option<bool> {
        match f.node.value().and_then(Value::as_bool) {
            Some(b) => Some(b),
            None => self.wrong_type(f, "a boolean (true or false)"),
        }
    }

    pub(super) fn integer(&mut self, f: &Field<'a, '_>) -> Option<i64> {
        match f.node.value().and_then(Value::as_integer) {
            Some(n) => Some(n),
            None => self.wrong_type(f, "an integer"),
        }
    }

    /// The entries of `[[name]]` tables (or `name = [{ ... }]`), each with its index and where
    /// it starts, and whether every element was a table (the others are reported). `None`, with
    /// the problem reported, when the value is neither.
    pub(super) fn tables<'d>(
        &mut self,
        f: &Field<'a, 'd>,
        name: &str,
    ) -> Option<(Vec<TableEntry<'a, 'd>>, bool)> {
        let mut entries = Vec::new();
        let mut ok = true;
        match f.node {
            Node::Item(Item::ArrayOfTables(tables)) => {
                for (i, table) in tables.iter().enumerate() {
                    entries.push((i, table as &dyn TableLike, self.loc(table.span())));
                }
            }
            Node::Item(Item::Value(Value::Array(array))) => {
                for (i, value) in array.iter().enumerate() {
                    let loc = self.loc(value.span());
                    match value.as_inline_table() {
                        Some(table) => entries.push((i, table as &dyn TableLike, loc)),
                        None => {
                            let message = format!("expected a table, found {}", value.type_name());
                            self.report(loc, &format!("{name}[{i}]"), message);
                            ok = false;
                        }
                    }
                }
            }
            other => {
                let message = format!(
                    "expected [[{name}]] tables (an array of tables), found {}",
                    other.type_name()
                );
                self.report(f.value_loc, &f.path, message);
                return None;
            }
        }
        Some((entries, ok))
    }

    /// The elements of an array value, each as a field named `path[i]`.
    fn array<'d>(&mut self, f: &Field<'a, 'd>, expected: &str) -> Option<Vec<Field<'a, 'd>>> {
        let Some(array) = f.node.value().and_then(Value::as_array) else {
            return self.wrong_type(f, expected);
        };
        let elements = array
            .iter()
            .enumerate()
            .map(|(i, value)| Field {
                path: format!("{}[{i}]", f.path),
                node: Node::Value(value),
                key_loc: f.key_loc,
                value_loc: match value.span() {
                    Some(span) => self.loc(Some(span)),
                    None => f.value_loc,
                },
            })
            .collect();
        Some(elements)
    }

    /// Reads every element with `read`; `None` if any failed (each failure reported).
    pub(super) fn each<'d, T>(
        &mut self,
        f: &Field<'a, 'd>,
        expected: &str,
        mut read: impl FnMut(&mut Self, &Field<'a, 'd>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let elements = self.array(f, expected)?;
        let read: Vec<Option<T>> = elements.iter().map(|e| read(self, e)).collect();
        read.into_iter().collect()
    }
}

/// A key as shown in a dotted path: bare when TOML would allow it bare, else quoted.
fn show_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// 1-based line of byte `offset` in `text` (clamped to the text).
pub(super) fn line_at(text: &[u8], offset: usize) -> usize {
    let end = offset.min(text.len());
    text[..end].iter().filter(|&&b| b == b'\n').count() + 1
}
