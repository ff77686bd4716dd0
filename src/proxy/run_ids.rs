//! Learning a run's ids from the bytes that pass through, without buffering
//! them: the top-level `run_id` and `session_id` of a JSON answer (a
//! non-streamed run, or a background run's 202), and the `run_id` form field
//! of a urlencoded request body.
//!
//! Both scanners look at each chunk once as it is forwarded and keep a few
//! bytes of state, so the proxy path stays zero-copy.

/// The ids a run is known by.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunIds {
    pub run_id: Option<String>,
    pub session_id: Option<String>,
}

/// Finds the string values of the top-level `"run_id"` and `"session_id"`
/// keys of a JSON object fed in arbitrary chunks. Nested objects (an input
/// dict that happens to contain `run_id`) are ignored.
#[derive(Debug, Default)]
pub struct JsonIdScanner {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// The current string's bytes, kept only while it may be a key we want
    /// or the value that follows one.
    current: Vec<u8>,
    /// The last top-level key seen, while its value is pending.
    pending_key: Option<Key>,
    /// Whether the string being read is in key position.
    expect_key: bool,
    ids: RunIds,
    done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    RunId,
    SessionId,
    Other,
}

/// Longest id value we keep; longer values are not ids we can route by.
const MAX_ID_LEN: usize = 256;

impl JsonIdScanner {
    pub fn new() -> Self {
        JsonIdScanner::default()
    }

    /// Feeds the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.done {
            return;
        }
        for &b in chunk {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                    self.push(b);
                } else if b == b'\\' {
                    self.escaped = true;
                    // Ids never contain escapes; drop any candidate that does.
                    self.current.clear();
                    self.current.push(0);
                } else if b == b'"' {
                    self.in_string = false;
                    self.end_string();
                } else {
                    self.push(b);
                }
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    self.current.clear();
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    self.expect_key = b == b'{' && self.depth == 1;
                    if self.depth > 1 && self.pending_key.is_some() {
                        // The value is an object or array, not an id.
                        self.pending_key = None;
                    }
                }
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        self.done = true;
                        return;
                    }
                }
                b',' if self.depth == 1 => {
                    self.expect_key = true;
                    self.pending_key = None;
                }
                b':' if self.depth == 1 => self.expect_key = false,
                _ => {}
            }
        }
    }

    fn push(&mut self, b: u8) {
        if self.depth == 1 && self.current.len() <= MAX_ID_LEN {
            self.current.push(b);
        }
    }

    fn end_string(&mut self) {
        if self.depth != 1 {
            return;
        }
        if self.expect_key {
            self.pending_key = Some(match self.current.as_slice() {
                b"run_id" => Key::RunId,
                b"session_id" => Key::SessionId,
                _ => Key::Other,
            });
            return;
        }
        let value = match std::str::from_utf8(&self.current) {
            Ok(v) if !v.is_empty() && v.len() <= MAX_ID_LEN && !v.contains('\0') => v,
            _ => return,
        };
        match self.pending_key.take() {
            Some(Key::RunId) if self.ids.run_id.is_none() => self.ids.run_id = Some(value.into()),
            Some(Key::SessionId) if self.ids.session_id.is_none() => {
                self.ids.session_id = Some(value.into())
            }
            _ => {}
        }
    }

    /// The ids found so far.
    pub fn ids(&self) -> &RunIds {
        &self.ids
    }
}

/// What the gateway learns from a urlencoded run request as it streams by:
/// whether the caller named a `run_id`, and whether the run is a background
/// run (which must outlive its client, so the gateway never cancels it).
#[derive(Debug, Default)]
pub struct FormScanner {
    name: ShortBytes<{ MAX_NAME + 1 }>,
    value: ShortBytes<{ MAX_VALUE + 1 }>,
    in_value: bool,
    has_run_id: bool,
    background: bool,
}

/// Longest field name and value the scanner keeps; longer ones are not the
/// fields it looks for.
const MAX_NAME: usize = 16;
const MAX_VALUE: usize = 8;

/// The first `N` bytes of a field name or value, kept inline: the scanner
/// runs over every run request's body and needs no allocation.
#[derive(Debug)]
struct ShortBytes<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Default for ShortBytes<N> {
    fn default() -> Self {
        ShortBytes {
            bytes: [0; N],
            len: 0,
        }
    }
}

impl<const N: usize> ShortBytes<N> {
    /// Keeps `b` if there is room; a longer field keeps its first `N` bytes.
    fn push(&mut self, b: u8) {
        if self.len < N {
            self.bytes[self.len] = b;
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

impl FormScanner {
    pub fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            match b {
                b'&' => self.end_field(),
                b'=' if !self.in_value => self.in_value = true,
                _ if self.in_value => self.value.push(b),
                _ => self.name.push(b),
            }
        }
    }

    /// Ends the last field; call once the body is complete.
    pub fn finish(&mut self) {
        self.end_field();
    }

    fn end_field(&mut self) {
        match self.name.as_slice() {
            b"run_id" => self.has_run_id = true,
            b"background" => {
                self.background = matches!(
                    self.value.as_slice(),
                    b"true" | b"True" | b"1" | b"yes" | b"on"
                )
            }
            _ => {}
        }
        self.name.clear();
        self.value.clear();
        self.in_value = false;
    }

    /// Whether the body named a `run_id` field.
    pub fn has_run_id(&self) -> bool {
        self.has_run_id
    }

    /// Whether the body asked for a background run.
    pub fn background(&self) -> bool {
        self.background
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(json: &str, piece: usize) -> RunIds {
        let mut s = JsonIdScanner::new();
        for chunk in json.as_bytes().chunks(piece) {
            s.feed(chunk);
        }
        s.ids().clone()
    }

    #[test]
    fn finds_top_level_ids_in_any_chunking() {
        let json = r#"{"input":{"run_id":"nested","x":[1,{"session_id":"n2"}]},"content":"say \"run_id\":\"no\"","run_id":"R-1","session_id":"S-1","step_results":[{"run_id":"inner"}]}"#;
        for piece in [1, 2, 3, 7, 1000] {
            let ids = scan_in_pieces(json, piece);
            assert_eq!(ids.run_id.as_deref(), Some("R-1"), "piece {piece}");
            assert_eq!(ids.session_id.as_deref(), Some("S-1"), "piece {piece}");
        }
    }

    #[test]
    fn ignores_non_string_and_missing_ids() {
        let ids = scan_in_pieces(r#"{"run_id":null,"session_id":{"a":"b"},"z":"run_id"}"#, 4);
        assert_eq!(ids, RunIds::default());
        let ids = scan_in_pieces(r#"[{"run_id":"x"}]"#, 4);
        assert_eq!(ids.run_id, None);
    }

    #[test]
    fn form_scanner_finds_run_id_and_background_in_any_chunking() {
        let scan = |body: &str, piece: usize| {
            let mut s = FormScanner::default();
            for chunk in body.as_bytes().chunks(piece) {
                s.feed(chunk);
            }
            s.finish();
            (s.has_run_id(), s.background())
        };
        for piece in [1, 3, 100] {
            assert_eq!(scan("message=hi&run_id=abc", piece), (true, false));
            assert_eq!(
                scan("run_id=abc&background=true&message=hi", piece),
                (true, true)
            );
            assert_eq!(
                scan("message=run_id%3Dx&my_run_id=3", piece),
                (false, false)
            );
            assert_eq!(
                scan("message=hi&run_idx=1&background=false", piece),
                (false, false)
            );
            assert_eq!(
                scan("message=a&b=run_id=&stream=false&background=1", piece),
                (false, true)
            );
        }
    }

    // The scanners read bytes from callers and hosts: any bytes, cut
    // anywhere, must give the same verdict as the whole body at once (and
    // never panic). A stand-in for fuzzing, which needs a nightly
    // toolchain this project does not have.
    mod chunking {
        use proptest::prelude::*;

        use super::super::*;

        /// `bytes` cut at `cuts` (positions, in any order, any range).
        fn pieces(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
            let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            at.sort_unstable();
            at.dedup();
            let mut out = Vec::new();
            let mut start = 0;
            for cut in at.into_iter().chain([bytes.len()]) {
                out.push(bytes[start..cut].to_vec());
                start = cut;
            }
            out
        }

        fn json_body() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..256),
                "[{}\\[\\]\",:a-z_0-9 ]{0,200}".prop_map(String::into_bytes),
                (".{0,20}", ".{0,20}").prop_map(|(run, session)| {
                    serde_json::json!({"content": "x", "run_id": run, "session_id": session})
                        .to_string()
                        .into_bytes()
                }),
            ]
        }

        fn form_body() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..256),
                "[a-z_=&%0-9]{0,120}".prop_map(String::into_bytes),
            ]
        }

        proptest! {
            #[test]
            fn json_ids_do_not_depend_on_the_chunking(
                body in json_body(),
                cuts in proptest::collection::vec(any::<usize>(), 0..12),
            ) {
                let mut whole = JsonIdScanner::new();
                whole.feed(&body);
                let mut cut = JsonIdScanner::new();
                for piece in pieces(&body, &cuts) {
                    cut.feed(&piece);
                }
                prop_assert_eq!(whole.ids(), cut.ids());
            }

            #[test]
            fn form_facts_do_not_depend_on_the_chunking(
                body in form_body(),
                cuts in proptest::collection::vec(any::<usize>(), 0..12),
            ) {
                let mut whole = FormScanner::default();
                whole.feed(&body);
                whole.finish();
                let mut cut = FormScanner::default();
                for piece in pieces(&body, &cuts) {
                    cut.feed(&piece);
                }
                cut.finish();
                prop_assert_eq!(
                    (whole.has_run_id(), whole.background()),
                    (cut.has_run_id(), cut.background())
                );
            }
        }
    }
}
