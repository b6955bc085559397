//! A small, bounded walker over WeCom's flat XML documents.
//!
//! WeCom's envelopes and events are `<xml>` with leaf children (sometimes one more level, such as
//! `<MemChangeList><Item>…</Item></MemChangeList>`). Any element may or may not wrap its text in CDATA,
//! so the walker reports every *leaf* element with its text, whatever the wrapping, and leaves the
//! meaning to the caller. It never expands entities beyond XML's five predefined ones and character
//! references, refuses DTDs, and caps depth and element count, so an entity bomb or a deeply nested
//! document is a clean error rather than memory or stack use without bound.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::events::Event;

/// Deepest nesting accepted (root = 1). WeCom's deepest is `ExtAttr/Item/Web/Url` at depth 5.
pub const MAX_DEPTH: usize = 8;
/// Most elements accepted in one document.
pub const MAX_ELEMENTS: usize = 4096;

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// quick-xml could not tokenise the input (unclosed tags, mismatched end tags, bad syntax).
    #[error("malformed XML: {0}")]
    Syntax(String),
    /// A `<!DOCTYPE …>` was present; WeCom never sends one, and DTDs are where entity bombs live.
    #[error("DTDs are not accepted")]
    Doctype,
    /// An entity other than the five predefined ones or a character reference.
    #[error("unknown entity reference")]
    UnknownEntity,
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    /// More than [`MAX_ELEMENTS`] elements.
    #[error("more than {MAX_ELEMENTS} elements")]
    TooManyElements,
    /// No root element, text outside it, a second root, or the document ended early.
    #[error("not a single-rooted document")]
    NotOneRoot,
}

/// One leaf element: its path below the root (e.g. `["MemChangeList", "Item"]`) and its text.
#[derive(Debug)]
pub struct Leaf<'p, 'a> {
    /// Element names from the root's child down to this leaf.
    pub path: &'p [String],
    /// The text content, CDATA unwrapped and predefined entities resolved.
    pub text: Cow<'a, str>,
}

impl Leaf<'_, '_> {
    /// The leaf's own element name.
    pub fn name(&self) -> &str {
        self.path.last().map_or("", String::as_str)
    }
}

/// Walks `input`, calling `on_leaf` for every leaf element below the root, in document order.
/// Returns the root element's name.
pub fn walk<'a>(input: &'a str, mut on_leaf: impl FnMut(Leaf<'_, 'a>)) -> Result<String, XmlError> {
    let mut reader = Reader::from_str(input);
    reader.config_mut().check_end_names = true;
    let mut root: Option<String> = None;
    let mut root_closed = false;
    // Names below the root; `had_child[i]` says whether `stack[i]` (or the root, at index 0 of
    // `had_child`) contains an element, i.e. is not a leaf.
    let mut stack: Vec<String> = Vec::with_capacity(MAX_DEPTH);
    let mut had_child: Vec<bool> = Vec::with_capacity(MAX_DEPTH);
    let mut text: Option<Cow<'a, str>> = None;
    let mut elements = 0usize;

    loop {
        let event = reader
            .read_event()
            .map_err(|e| XmlError::Syntax(e.to_string()))?;
        match event {
            Event::Start(start) | Event::Empty(start) if root_closed => {
                let _ = start;
                return Err(XmlError::NotOneRoot);
            }
            Event::Start(start) => {
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(XmlError::TooManyElements);
                }
                let name = element_name(start.name().as_ref())?;
                if root.is_none() {
                    root = Some(name);
                    had_child.push(false);
                    continue;
                }
                if had_child.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                if let Some(parent) = had_child.last_mut() {
                    *parent = true;
                }
                stack.push(name);
                had_child.push(false);
                text = None;
            }
            Event::Empty(start) => {
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(XmlError::TooManyElements);
                }
                let name = element_name(start.name().as_ref())?;
                if root.is_none() {
                    root = Some(name);
                    root_closed = true;
                    continue;
                }
                if had_child.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                if let Some(parent) = had_child.last_mut() {
                    *parent = true;
                }
                stack.push(name);
                on_leaf(Leaf {
                    path: &stack,
                    text: Cow::Borrowed(""),
                });
                stack.pop();
                text = None;
            }
            Event::End(_) => {
                let Some(is_parent) = had_child.pop() else {
                    return Err(XmlError::NotOneRoot);
                };
                if had_child.is_empty() {
                    root_closed = true;
                    continue;
                }
                let leaf_text = text.take();
                if !is_parent {
                    on_leaf(Leaf {
                        path: &stack,
                        text: leaf_text.unwrap_or(Cow::Borrowed("")),
                    });
                }
                stack.pop();
            }
            Event::Text(t) => {
                let piece = t.into_inner();
                if had_child.is_empty() {
                    if !piece.trim().is_empty() {
                        return Err(XmlError::NotOneRoot);
                    }
                    continue;
                }
                append(&mut text, piece);
            }
            Event::CData(c) => {
                if had_child.is_empty() {
                    return Err(XmlError::NotOneRoot);
                }
                append(&mut text, c.into_inner());
            }
            Event::GeneralRef(r) => {
                if had_child.is_empty() {
                    return Err(XmlError::NotOneRoot);
                }
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => match r.as_ref() {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        _ => return Err(XmlError::UnknownEntity),
                    },
                    Err(_) => return Err(XmlError::UnknownEntity),
                };
                let mut buf = [0u8; 4];
                append(
                    &mut text,
                    Cow::Owned(resolved.encode_utf8(&mut buf).to_owned()),
                );
            }
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    match root {
        Some(name) if root_closed => Ok(name),
        _ => Err(XmlError::NotOneRoot),
    }
}

fn element_name(raw: &str) -> Result<String, XmlError> {
    Ok(raw.to_owned())
}

fn append<'a>(acc: &mut Option<Cow<'a, str>>, piece: Cow<'a, str>) {
    match acc {
        None => *acc = Some(piece),
        Some(existing) => existing.to_mut().push_str(&piece),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(input: &str) -> Result<Vec<(String, String)>, XmlError> {
        let mut out = Vec::new();
        walk(input, |leaf| {
            out.push((leaf.path.join("/"), leaf.text.into_owned()))
        })?;
        Ok(out)
    }

    #[test]
    fn reads_cdata_plain_text_and_nested_items() {
        let got = leaves(
            "<xml><A><![CDATA[x <y>]]></A>\n<B>1</B><C/><L><Item><![CDATA[i1]]></Item><Item>i2</Item></L></xml>",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("A".into(), "x <y>".into()),
                ("B".into(), "1".into()),
                ("C".into(), String::new()),
                ("L/Item".into(), "i1".into()),
                ("L/Item".into(), "i2".into()),
            ]
        );
    }

    #[test]
    fn resolves_predefined_entities_and_char_refs() {
        let got = leaves("<xml><A>a &amp; b &#x4F60;&#22909;</A></xml>").unwrap();
        assert_eq!(got, vec![("A".into(), "a & b 你好".into())]);
    }

    #[test]
    fn refuses_dtd_and_unknown_entities() {
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]><xml><A>&lol2;</A></xml>";
        assert_eq!(leaves(bomb), Err(XmlError::Doctype));
        assert_eq!(
            leaves("<xml><A>&lol;</A></xml>"),
            Err(XmlError::UnknownEntity)
        );
    }

    #[test]
    fn refuses_deep_nesting_and_bad_structure() {
        let deep = format!("<xml>{}{}</xml>", "<a>".repeat(100), "</a>".repeat(100));
        assert_eq!(leaves(&deep), Err(XmlError::TooDeep));
        assert!(matches!(
            leaves("<xml><A>1</B></xml>"),
            Err(XmlError::Syntax(_))
        ));
        assert_eq!(leaves("<xml><A>1</A>"), Err(XmlError::NotOneRoot));
        assert_eq!(leaves("<xml/><xml/>"), Err(XmlError::NotOneRoot));
        assert_eq!(leaves("hello"), Err(XmlError::NotOneRoot));
        assert_eq!(leaves(""), Err(XmlError::NotOneRoot));
    }

    #[test]
    fn refuses_too_many_elements() {
        let many = format!("<xml>{}</xml>", "<a/>".repeat(MAX_ELEMENTS + 1));
        assert_eq!(leaves(&many), Err(XmlError::TooManyElements));
    }
}
