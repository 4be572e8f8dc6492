//! docs/configuration.md lists every keyword luahost accepts (and those it
//! accepts without effect as such): each keyword table of the parser is
//! checked against the section of the document that describes it.

const DOC: &str = include_str!("../../../docs/configuration.md");

/// The text of the document from `heading` to the next heading of the same
/// or a higher level.
fn section(heading: &str) -> &'static str {
    let Some(start) = DOC.find(&format!("\n{heading}\n")) else {
        panic!("docs/configuration.md has no heading {heading:?}");
    };
    let level = heading.chars().take_while(|c| *c == '#').count();
    let body = &DOC[start + heading.len() + 2..];
    let end = body
        .match_indices("\n#")
        .find(|(i, _)| {
            let hashes = body[i + 1..].chars().take_while(|c| *c == '#').count();
            hashes <= level && body[i + 1 + hashes..].starts_with(' ')
        })
        .map_or(body.len(), |(i, _)| i);
    &body[..end]
}

/// Whether `text` names `kw` in code style: `` `kw` `` or `` `kw ARGS` ``.
fn names(text: &str, kw: &str) -> bool {
    text.contains(&format!("`{kw}`")) || text.contains(&format!("`{kw} "))
}

/// The keywords of `kws` that `text` does not name.
fn missing<'a>(text: &str, kws: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    kws.into_iter().filter(|k| !names(text, k)).collect()
}

/// The keywords of `kws` that no table row of `text` describes (names in
/// its first cell).
fn missing_rows<'a>(text: &str, kws: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let first_cells: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix('|')?.split('|').next())
        .collect();
    kws.into_iter()
        .filter(|k| !first_cells.iter().any(|c| names(c, k)))
        .collect()
}

#[test]
fn every_global_keyword_is_documented() {
    let global = section("## The `global` section");
    let kws = super::global::KEYWORDS
        .iter()
        .chain(super::process::PROCESS)
        .copied();
    assert_eq!(missing_rows(global, kws), Vec::<&str>::new());
    assert_eq!(
        missing(global, super::global::UNSUPPORTED.iter().copied())
            .into_iter()
            // Documented as a family: "the `ssl-default-*` keywords".
            .filter(|k| !k.starts_with("ssl-default-"))
            .collect::<Vec<_>>(),
        Vec::<&str>::new(),
        "refused global keywords"
    );
}

#[test]
fn keywords_accepted_without_effect_are_documented_as_such() {
    let table = section("### Accepted without effect");
    let kws = super::process::NO_EFFECT.iter().map(|(k, _, _)| *k);
    assert_eq!(missing_rows(table, kws), Vec::<&str>::new());
}

#[test]
fn every_proxy_keyword_timeout_and_option_is_documented() {
    let keywords = section("### Keywords");
    let kws = super::proxy::KEYWORDS
        .iter()
        .map(|(k, _)| *k)
        // `no` is documented with what it negates: `no option`, `no log`.
        .filter(|k| *k != "no");
    assert_eq!(missing_rows(keywords, kws), Vec::<&str>::new());
    assert!(names(keywords, "no option") && names(keywords, "no log"));
    assert_eq!(
        missing(keywords, super::proxy::UNSUPPORTED.iter().copied()),
        Vec::<&str>::new(),
        "refused proxy keywords"
    );
    let timeouts = section("### Timeouts");
    let kws = super::proxy::TIMEOUTS.iter().map(|(k, _)| *k);
    assert_eq!(missing_rows(timeouts, kws), Vec::<&str>::new());
    let options = section("### Options");
    let kws = super::proxy::OPTIONS.iter().map(|(k, _)| *k);
    assert_eq!(missing_rows(options, kws), Vec::<&str>::new());
}
