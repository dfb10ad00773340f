//! Where a problem is in the file a user wrote: the line of a key path such as
//! `camera[2].source`, and the camera (or worker) named as the user named it, so that
//! `check-config` can say `livelens.toml:23: camera "door": source: …`.
//!
//! Sans-IO: the file's text in, a line and a label out.

use std::ops::Range;

use toml_edit::{Document, InlineTable, Item, Table, Value};

/// A problem's place, as it is shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// 1-based line of the key (or of the nearest enclosing key or table that is in the file).
    pub line: Option<usize>,
    /// The place with a camera's or worker's index replaced by its id or name:
    /// `camera "door": source` for `camera[2].source`; empty for the file as a whole.
    pub label: String,
}

/// Locates `place` (a key path from [`super::Problem`]) in `text`.
pub fn locate(text: &str, place: &str) -> Located {
    // A syntax error's place is already its line.
    if let Some(line) = place.strip_prefix("line ").and_then(|l| l.parse().ok()) {
        return Located {
            line: Some(line),
            label: String::new(),
        };
    }
    let Ok(doc) = Document::parse(text) else {
        return Located {
            line: None,
            label: place.to_string(),
        };
    };
    let steps = steps(place);
    let line = span_of(doc.as_item(), &steps).map(|s| line_of(text, s.start));
    Located {
        line,
        label: label(doc.as_item(), place, &steps),
    }
}

/// One step of a key path: a key, then any number of indices (`alert[0]`, `origins[1]`).
fn steps(place: &str) -> Vec<(&str, Vec<usize>)> {
    place
        .split('.')
        .filter(|s| !s.is_empty())
        .map(|segment| {
            let mut parts = segment.split('[');
            let key = parts.next().unwrap_or_default();
            let indices = parts
                .filter_map(|p| p.strip_suffix(']').and_then(|n| n.parse().ok()))
                .collect();
            (key, indices)
        })
        .collect()
}

/// Where the walk down a key path stands: a table (a section, an element of an array of
/// tables), an inline table, or an item reached by key.
#[derive(Clone, Copy)]
enum Node<'a> {
    Table(&'a Table),
    Inline(&'a InlineTable),
    Item(&'a Item),
    /// A plain value: nothing below it is addressed by key.
    Leaf,
}

impl<'a> Node<'a> {
    fn of(item: &'a Item) -> Node<'a> {
        match item {
            Item::Table(t) => Node::Table(t),
            Item::Value(Value::InlineTable(t)) => Node::Inline(t),
            other => Node::Item(other),
        }
    }

    /// A key's span and what it holds.
    fn child(self, key: &str) -> Option<(Option<Range<usize>>, &'a Item)> {
        let (k, v) = match self {
            Node::Table(t) => t.get_key_value(key)?,
            Node::Inline(t) => t.get_key_value(key)?,
            Node::Item(_) | Node::Leaf => return None,
        };
        Some((k.span(), v))
    }

    /// Element `i` of an array of tables or of a plain array, and its span.
    fn element(self, i: usize) -> Option<(Option<Range<usize>>, Node<'a>)> {
        match self {
            Node::Item(Item::ArrayOfTables(a)) => a.get(i).map(|t| (t.span(), Node::Table(t))),
            Node::Item(Item::Value(Value::Array(a))) => a.get(i).map(|v| {
                let node = match v {
                    Value::InlineTable(t) => Node::Inline(t),
                    _ => Node::Leaf,
                };
                (v.span(), node)
            }),
            _ => None,
        }
    }
}

/// The span of the deepest part of the path that the file has.
fn span_of(root: &Item, steps: &[(&str, Vec<usize>)]) -> Option<Range<usize>> {
    let mut node = Node::of(root);
    let mut found = None;
    for (key, indices) in steps {
        let Some((span, item)) = node.child(key) else {
            break;
        };
        found = span.or(found);
        node = Node::of(item);
        for &i in indices {
            let Some((span, next)) = node.element(i) else {
                return found;
            };
            found = span.or(found);
            node = next;
        }
    }
    found
}

/// The 1-based line of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// `camera[2].source` → `camera "door": source` (the id as written in the file).
fn label(root: &Item, place: &str, steps: &[(&str, Vec<usize>)]) -> String {
    let Some((section @ ("camera" | "worker"), indices)) = steps.first() else {
        return place.to_string();
    };
    let [index] = indices[..] else {
        return place.to_string();
    };
    let name_key = if *section == "camera" { "id" } else { "name" };
    let name = match root.get(section) {
        Some(Item::ArrayOfTables(a)) => a
            .get(index)
            .and_then(|t| t.get(name_key))
            .and_then(|v| v.as_str()),
        _ => None,
    };
    let Some(name) = name else {
        return place.to_string();
    };
    let rest = place.split_once('.').map_or("", |(_, r)| r);
    if rest.is_empty() {
        format!("{section} {name:?}")
    } else {
        format!("{section} {name:?}: {rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
[server]
listen = \"nowhere\"
allowed_origins = [\"https://a.example\", \"bad\"]

[[camera]]
id = \"door\"
source = \"ftp://x\"

[[camera]]
id = \"yard\"
source = \"testsrc://\"
record = { keep = \"forever\" }

[camera.analysis.vlm]
endpoint = \"nope\"

[[camera.analysis.alert]]
name = \"a\"

[[camera.analysis.alert]]
name = \"b\"
question = \"\"

[[worker]]
name = \"gpu\"
";

    fn at(place: &str) -> (Option<usize>, String) {
        let l = locate(FILE, place);
        (l.line, l.label)
    }

    #[test]
    fn keys_are_found_on_their_line_and_cameras_by_id() {
        assert_eq!(at("server.listen"), (Some(2), "server.listen".into()));
        assert_eq!(
            at("server.allowed_origins[1]"),
            (Some(3), "server.allowed_origins[1]".into())
        );
        assert_eq!(
            at("camera[0].source"),
            (Some(7), "camera \"door\": source".into())
        );
        assert_eq!(at("camera[1].id"), (Some(10), "camera \"yard\": id".into()));
        assert_eq!(
            at("camera[1].record.keep"),
            (Some(12), "camera \"yard\": record.keep".into())
        );
        assert_eq!(
            at("camera[1].analysis.vlm.endpoint"),
            (Some(15), "camera \"yard\": analysis.vlm.endpoint".into())
        );
        assert_eq!(
            at("camera[1].analysis.alert[1].question"),
            (
                Some(22),
                "camera \"yard\": analysis.alert[1].question".into()
            )
        );
        assert_eq!(
            at("worker[0].name"),
            (Some(25), "worker \"gpu\": name".into())
        );
    }

    #[test]
    fn a_missing_key_points_at_what_encloses_it() {
        // No `question` in the first alert: the alert's header.
        assert_eq!(
            at("camera[1].analysis.alert[0].question"),
            (
                Some(17),
                "camera \"yard\": analysis.alert[0].question".into()
            )
        );
        // A camera with no such key at all: its `[[camera]]` header.
        assert_eq!(
            at("camera[0].zoom"),
            (Some(5), "camera \"door\": zoom".into())
        );
        assert_eq!(at("camera[0]"), (Some(5), "camera \"door\"".into()));
        assert_eq!(at("mqtt.url"), (None, "mqtt.url".into()));
    }

    #[test]
    fn syntax_errors_keep_their_line_and_broken_files_keep_the_place() {
        assert_eq!(at("line 4"), (Some(4), String::new()));
        assert_eq!(
            locate("[[camera]]\nid = \n", "camera[0].id"),
            Located {
                line: None,
                label: "camera[0].id".into()
            }
        );
    }
}
