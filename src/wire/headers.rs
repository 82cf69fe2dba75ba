//! Header fields as both decoders hand them over.

use std::fmt;

/// A decoded header list (an HTTP/2 header block, an HTTP/1.1 head or trailer section), in
/// wire order, names as sent. Values are lossy UTF-8. `Debug` prints names and value lengths
/// only: values can be credentials (`Authorization`, `X-Registry-Auth`).
///
/// All fields share one string: a call's header lists have a dozen fields each, and two
/// allocations per field were a tenth of the observer's time at high call rates.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Headers {
    text: String,
    /// Per field, where its name ends and its value ends in `text`; a name starts where the
    /// previous value ended.
    ends: Vec<(u32, u32)>,
}

impl Headers {
    /// From (name, value) pairs.
    pub fn new(pairs: Vec<(String, String)>) -> Headers {
        let mut h = Headers::default();
        for (n, v) in &pairs {
            h.push(n, v);
        }
        h
    }

    /// An empty list with room for about `fields` fields of `bytes` bytes in all.
    pub(crate) fn with_capacity(fields: usize, bytes: usize) -> Headers {
        Headers {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(fields),
        }
    }

    /// Appends a field. Lists are capped far below 4 GiB by their decoders.
    pub(crate) fn push(&mut self, name: &str, value: &str) {
        self.text.push_str(name);
        let name_end = self.text.len();
        self.text.push_str(value);
        self.ends.push((name_end as u32, self.text.len() as u32));
    }

    /// The first value of `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// Every value of the field `name`, case-insensitively, in wire order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// True when a comma-separated list field `name` holds `token` (case-insensitive),
    /// as in `Connection: keep-alive, Upgrade`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// All (name, value) pairs in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut start = 0usize;
        self.ends.iter().map(move |&(name_end, value_end)| {
            let (name_end, value_end) = (name_end as usize, value_end as usize);
            let field = (&self.text[start..name_end], &self.text[name_end..value_end]);
            start = value_end;
            field
        })
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// No fields.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The pairs.
    pub fn into_vec(self) -> Vec<(String, String)> {
        self.iter().map(|(n, v)| (n.to_owned(), v.to_owned())).collect()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (n, v) in self.iter() {
            m.entry(&n, &format_args!("<{} bytes>", v.len()));
        }
        m.finish()
    }
}
