//! Map and ACL pattern files, loaded once per file and shared by every user
//! (map converters, ACL `-f`, Lua `Map.new`, `core.set_map`/`add_acl`).
//!
//! A file is kept as its list of entries (key, value) plus one index per
//! matching method in use. Runtime changes update the list and every index,
//! so all users see them at once.

use super::pattern::{expand_backrefs, Entry, MatchMethod, PatternIndex};
use super::Sample;
use bytes::Bytes;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

/// How a file's lines are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// `key value` per line (map converters, `Map.new`, ACL `-M`).
    Map,
    /// One pattern per line, spaces included (ACL `-f`).
    Acl,
}

/// A loaded pattern file.
pub struct MapFile {
    name: String,
    kind: FileKind,
    inner: RwLock<Inner>,
}

struct Inner {
    entries: Vec<Entry>,
    /// Line numbers of `entries` read from the file (0 when added later).
    lines: Vec<usize>,
    indexes: HashMap<(MatchMethod, bool), PatternIndex>,
}

impl std::fmt::Debug for MapFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapFile")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish()
    }
}

type Registry = HashMap<(String, FileKind), Arc<MapFile>>;

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

fn canonical(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok()
}

/// Loads `path` as a map (cached: one loaded copy per file).
pub fn load(path: &Path) -> Result<Arc<MapFile>, String> {
    load_kind(path, FileKind::Map)
}

/// Loads `path` read as `kind` (cached per file and kind, as HAProxy keeps
/// separate references for maps and ACL lists of one file).
pub fn load_kind(path: &Path, kind: FileKind) -> Result<Arc<MapFile>, String> {
    let name = path.to_string_lossy().into_owned();
    if let Some(m) = find_kind(&name, kind) {
        return Ok(m);
    }
    let data =
        std::fs::read(path).map_err(|e| format!("failed to open pattern file <{name}>: {e}"))?;
    let (entries, lines) = parse_file(&data, kind);
    let file = Arc::new(MapFile {
        name: name.clone(),
        kind,
        inner: RwLock::new(Inner {
            entries,
            lines,
            indexes: HashMap::new(),
        }),
    });
    let mut reg = registry()
        .lock()
        .map_err(|_| "map registry poisoned".to_string())?;
    // Another thread may have loaded it meanwhile: keep the first copy.
    if let Some(m) = reg.get(&(name.clone(), kind)) {
        return Ok(m.clone());
    }
    reg.insert((name, kind), file.clone());
    if let Some(c) = canonical(path) {
        reg.entry((c.to_string_lossy().into_owned(), kind))
            .or_insert_with(|| file.clone());
    }
    Ok(file)
}

/// An already loaded file of this kind, by the name it was loaded with or
/// by its canonical path.
pub fn find_kind(name: &str, kind: FileKind) -> Option<Arc<MapFile>> {
    let reg = registry().lock().ok()?;
    if let Some(m) = reg.get(&(name.to_string(), kind)) {
        return Some(m.clone());
    }
    let c = canonical(Path::new(name))?;
    reg.get(&(c.to_string_lossy().into_owned(), kind)).cloned()
}

/// An already loaded file, preferring `kind` but accepting the other one
/// (Lua's `core.set_map` and `core.add_acl` find files by name).
pub fn find(name: &str, kind: FileKind) -> Option<Arc<MapFile>> {
    let other = match kind {
        FileKind::Map => FileKind::Acl,
        FileKind::Acl => FileKind::Map,
    };
    find_kind(name, kind).or_else(|| find_kind(name, other))
}

/// Reads the lines of a pattern file (HAProxy's rules: a line starting
/// with '#' is a comment, leading blanks are skipped, empty lines ignored;
/// maps split the key at the first blank and trim the value).
fn parse_file(data: &[u8], kind: FileKind) -> (Vec<Entry>, Vec<usize>) {
    let mut entries = Vec::new();
    let mut lines = Vec::new();
    for (n, raw) in data.split(|&c| c == b'\n').enumerate() {
        if raw.first() == Some(&b'#') {
            continue;
        }
        let start = raw
            .iter()
            .position(|&c| c != b' ' && c != b'\t')
            .unwrap_or(raw.len());
        let rest = &raw[start..];
        let end = rest
            .iter()
            .position(|&c| c == b'\r' || c == b'\n')
            .unwrap_or(rest.len());
        let line = &rest[..end];
        if line.is_empty() {
            continue;
        }
        let entry = match kind {
            FileKind::Acl => Entry {
                key: Bytes::copy_from_slice(line),
                value: Bytes::new(),
            },
            FileKind::Map => {
                let kend = line
                    .iter()
                    .position(|&c| c == b' ' || c == b'\t')
                    .unwrap_or(line.len());
                let v = &line[kend..];
                let vs = v
                    .iter()
                    .position(|&c| c != b' ' && c != b'\t')
                    .unwrap_or(v.len());
                let v = &v[vs..];
                let ve = v
                    .iter()
                    .rposition(|&c| c != b' ' && c != b'\t')
                    .map_or(0, |e| e + 1);
                Entry {
                    key: Bytes::copy_from_slice(&line[..kend]),
                    value: Bytes::copy_from_slice(&v[..ve]),
                }
            }
        };
        entries.push(entry);
        lines.push(n + 1);
    }
    (entries, lines)
}

impl MapFile {
    /// An unnamed, unregistered list (inline ACL patterns use the same
    /// machinery without a file).
    pub fn anonymous(kind: FileKind, entries: Vec<Entry>) -> MapFile {
        let lines = vec![0; entries.len()];
        MapFile {
            name: String::new(),
            kind,
            inner: RwLock::new(Inner {
                entries,
                lines,
                indexes: HashMap::new(),
            }),
        }
    }

    /// The name the file was loaded with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the file's lines were read.
    pub fn kind(&self) -> FileKind {
        self.kind
    }

    /// A copy of the entries, in order.
    pub fn entries(&self) -> Vec<Entry> {
        self.inner
            .read()
            .map(|i| i.entries.clone())
            .unwrap_or_default()
    }

    fn build(
        &self,
        inner: &Inner,
        method: MatchMethod,
        icase: bool,
    ) -> Result<PatternIndex, String> {
        let mut idx = PatternIndex::new(method, icase);
        for (e, line) in inner.entries.iter().zip(&inner.lines) {
            idx.add(e.clone()).map_err(|err| {
                if self.name.is_empty() {
                    err
                } else {
                    format!("{err} at line {line} of file '{}'", self.name)
                }
            })?;
        }
        Ok(idx)
    }

    /// Builds the index for `method` (and case sensitivity) if not done
    /// yet, reporting the first invalid pattern.
    pub fn prepare(&self, method: MatchMethod, icase: bool) -> Result<(), String> {
        let icase = icase && method.uses_case();
        let mut inner = self
            .inner
            .write()
            .map_err(|_| "pattern file lock poisoned".to_string())?;
        if inner.indexes.contains_key(&(method, icase)) {
            return Ok(());
        }
        let idx = self.build(&inner, method, icase)?;
        inner.indexes.insert((method, icase), idx);
        Ok(())
    }

    /// Runs `f` on the index for `method`, building it when missing.
    fn with_index<R>(
        &self,
        method: MatchMethod,
        icase: bool,
        f: impl Fn(&PatternIndex) -> R,
    ) -> Option<R> {
        let icase = icase && method.uses_case();
        {
            let inner = self.inner.read().ok()?;
            if let Some(idx) = inner.indexes.get(&(method, icase)) {
                return Some(f(idx));
            }
        }
        self.prepare(method, icase).ok()?;
        let inner = self.inner.read().ok()?;
        inner.indexes.get(&(method, icase)).map(f)
    }

    /// The entry matching `sample` with `method`.
    pub fn lookup_entry(&self, method: MatchMethod, icase: bool, sample: &Sample) -> Option<Entry> {
        self.with_index(method, icase, |i| i.lookup(sample).cloned())
            .flatten()
    }

    /// The value of the entry matching `sample` with `method`.
    pub fn lookup(&self, method: MatchMethod, icase: bool, sample: &Sample) -> Option<Bytes> {
        self.lookup_entry(method, icase, sample).map(|e| e.value)
    }

    /// `map_regm`: the value of the first matching regex with `\N`
    /// replaced by its capture groups.
    pub fn lookup_regm(&self, icase: bool, sample: &Sample) -> Option<Bytes> {
        self.with_index(MatchMethod::Reg, icase, |i| {
            i.lookup_captures(sample)
                .map(|(e, caps)| Bytes::from(expand_backrefs(&e.value, &caps)))
        })
        .flatten()
    }

    /// Whether `sample` matches an entry with `method`.
    pub fn matches(&self, method: MatchMethod, icase: bool, sample: &Sample) -> bool {
        self.with_index(method, icase, |i| i.matches(sample))
            .unwrap_or(false)
    }

    /// Looks a string key up (Lua's `Map:lookup`): the key is cast to what
    /// the method reads (integer, address) first.
    pub fn lookup_str(&self, method: MatchMethod, key: &[u8]) -> Option<Bytes> {
        self.lookup(method, false, &Sample::Str(Bytes::copy_from_slice(key)))
    }

    /// Appends an entry; fails (changing nothing) when an index in use
    /// cannot read the key.
    pub fn add(&self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let mut inner = self
            .inner
            .write()
            .map_err(|_| "pattern file lock poisoned".to_string())?;
        for idx in inner.indexes.values() {
            idx.check(key)
                .map_err(|e| format!("{e} (method {})", idx.method().name()))?;
        }
        let e = Entry {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
        };
        for idx in inner.indexes.values_mut() {
            idx.add(e.clone())?;
        }
        inner.entries.push(e);
        inner.lines.push(0);
        Ok(())
    }

    /// Whether an entry has exactly this key.
    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.inner
            .read()
            .map(|i| i.entries.iter().any(|e| e.key == key))
            .unwrap_or(false)
    }

    /// Sets the value of every entry with this key, or adds the entry when
    /// there is none (`core.set_map`).
    pub fn set(&self, key: &[u8], value: &[u8]) -> Result<(), String> {
        {
            let mut inner = self
                .inner
                .write()
                .map_err(|_| "pattern file lock poisoned".to_string())?;
            if inner.entries.iter().any(|e| e.key == key) {
                let v = Bytes::copy_from_slice(value);
                for e in inner.entries.iter_mut().filter(|e| e.key == key) {
                    e.value = v.clone();
                }
                for idx in inner.indexes.values_mut() {
                    idx.set_value(key, &v);
                }
                return Ok(());
            }
        }
        self.add(key, value)
    }

    /// Adds the key unless present (`core.add_acl`).
    pub fn add_if_absent(&self, key: &[u8]) -> Result<(), String> {
        if self.contains_key(key) {
            return Ok(());
        }
        self.add(key, b"")
    }

    /// Removes every entry with this key; returns whether one existed.
    pub fn del(&self, key: &[u8]) -> bool {
        let Ok(mut inner) = self.inner.write() else {
            return false;
        };
        let before = inner.entries.len();
        let keep: Vec<bool> = inner.entries.iter().map(|e| e.key != key).collect();
        let mut it = keep.iter();
        inner.entries.retain(|_| *it.next().unwrap_or(&true));
        let mut it = keep.iter();
        inner.lines.retain(|_| *it.next().unwrap_or(&true));
        for idx in inner.indexes.values_mut() {
            idx.remove(key);
        }
        inner.entries.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::testutil::{s, temp_dir};

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn look(m: &MapFile, method: MatchMethod, k: &str) -> Option<String> {
        m.lookup(method, false, &s(k))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    #[test]
    fn file_format() {
        let d = temp_dir("mapfmt");
        let p = write(
            &d,
            "a.map",
            "# comment\n  /api    backend_api  \n\n/api/v2\tv2 with spaces\t \r\n #notcomment x\nkeyonly\n",
        );
        let m = load(&p).unwrap();
        let e = m.entries();
        assert_eq!(e.len(), 4);
        assert_eq!(e[0].key, "/api");
        assert_eq!(e[0].value, "backend_api");
        assert_eq!(e[1].value, "v2 with spaces");
        assert_eq!(e[2].key, "#notcomment");
        assert_eq!(e[3].key, "keyonly");
        assert_eq!(e[3].value, "");

        let p = write(&d, "a.acl", "# c\n  two words \n\n10.0.0.0/8\n");
        let a = load_kind(&p, FileKind::Acl).unwrap();
        let e = a.entries();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].key, "two words ");
        assert!(load(&d.join("missing.map"))
            .unwrap_err()
            .contains("failed to open"));
    }

    #[test]
    fn one_copy_per_file() {
        let d = temp_dir("mapshare");
        let p = write(&d, "s.map", "a 1\n");
        let m1 = load(&p).unwrap();
        let m2 = load(&d.join(".").join("s.map")).unwrap();
        assert!(Arc::ptr_eq(&m1, &m2));
        let a = load_kind(&p, FileKind::Acl).unwrap();
        assert!(!Arc::ptr_eq(&m1, &a));
        assert!(Arc::ptr_eq(
            &find(p.to_str().unwrap(), FileKind::Map).unwrap(),
            &m1
        ));
        m1.set(b"b", b"2").unwrap();
        assert_eq!(look(&m2, MatchMethod::Str, "b").as_deref(), Some("2"));
    }

    #[test]
    fn all_methods() {
        let d = temp_dir("mapall");
        let p = write(
            &d,
            "m.map",
            "/api api\n/api/v2 v2\n.png png\nadmin adm\nexample.com dom\n^/re/([0-9]+) re\n10.0.0.0/8 net\n10:20 range\nimages/png dir\n",
        );
        let m = load(&p).unwrap();
        use MatchMethod::*;
        assert_eq!(look(&m, Str, "/api").as_deref(), Some("api"));
        assert_eq!(look(&m, Str, "/api/x"), None);
        assert_eq!(look(&m, Beg, "/api/v2/x").as_deref(), Some("v2"));
        assert_eq!(look(&m, Sub, "/x/admin/y").as_deref(), Some("adm"));
        assert_eq!(look(&m, End, "/a/b.png").as_deref(), Some("png"));
        assert_eq!(look(&m, Dom, "www.example.com").as_deref(), Some("dom"));
        assert_eq!(look(&m, Dir, "/images/png/x.gif").as_deref(), Some("dir"));
        assert_eq!(look(&m, Reg, "/re/42").as_deref(), Some("re"));
        assert_eq!(
            m.lookup_regm(false, &s("/re/42")).as_deref(),
            Some(&b"re"[..])
        );
        // Building the ip and int indexes fails on this file: not all keys
        // are addresses or ranges.
        assert!(m.prepare(Ip, false).unwrap_err().contains("line 1 of file"));
        let p = write(&d, "ip.map", "10.0.0.0/8 net\n10.1.0.0/16 sub\n::1 v6\n");
        let m = load(&p).unwrap();
        assert_eq!(look(&m, Ip, "10.1.2.3").as_deref(), Some("sub"));
        assert_eq!(look(&m, Ip, "10.2.2.3").as_deref(), Some("net"));
        assert_eq!(look(&m, Ip, "::1").as_deref(), Some("v6"));
        assert_eq!(look(&m, Ip, "x"), None);
        let p = write(&d, "int.map", "10:20 a\n5 b\n");
        let m = load(&p).unwrap();
        assert_eq!(look(&m, Int, "15").as_deref(), Some("a"));
        assert_eq!(look(&m, Int, "5").as_deref(), Some("b"));
        assert_eq!(look(&m, Int, "6"), None);
    }

    #[test]
    fn runtime_updates() {
        let d = temp_dir("maprt");
        let p = write(&d, "rt.map", "a 1\nb 2\n");
        let m = load(&p).unwrap();
        m.prepare(MatchMethod::Str, false).unwrap();
        m.prepare(MatchMethod::Beg, false).unwrap();
        m.set(b"a", b"10").unwrap();
        assert_eq!(look(&m, MatchMethod::Str, "a").as_deref(), Some("10"));
        assert_eq!(look(&m, MatchMethod::Beg, "abc").as_deref(), Some("10"));
        m.set(b"c", b"3").unwrap();
        assert_eq!(look(&m, MatchMethod::Str, "c").as_deref(), Some("3"));
        assert!(m.del(b"a"));
        assert!(!m.del(b"a"));
        assert_eq!(look(&m, MatchMethod::Str, "a"), None);
        assert_eq!(look(&m, MatchMethod::Beg, "abc"), None);
        // An index that cannot read the key refuses it, and nothing changes.
        let p = write(&d, "rtip.map", "10.0.0.0/8 x\n");
        let m = load(&p).unwrap();
        m.prepare(MatchMethod::Ip, false).unwrap();
        assert!(m.add(b"not-an-ip", b"y").is_err());
        assert_eq!(m.entries().len(), 1);
        m.add_if_absent(b"192.168.0.0/16").unwrap();
        m.add_if_absent(b"192.168.0.0/16").unwrap();
        assert_eq!(m.entries().len(), 2);
        assert!(m.matches(MatchMethod::Ip, false, &s("192.168.3.4")));
    }
}
