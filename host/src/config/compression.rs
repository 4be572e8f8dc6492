//! `compression algo|algo-res|type|type-res|offload|direction ...` and
//! `filter compression`, read as HAProxy 3.0 reads them.

use super::{Compression, CompressionAlgo, CompressionDirection, Proxy};

/// HAProxy filters luahost knows but does not implement.
const OTHER_FILTERS: &[&str] = &[
    "trace",
    "cache",
    "spoe",
    "fcgi-app",
    "bwlim-in",
    "bwlim-out",
    "opentracing",
];

fn settings(p: &mut Proxy) -> &mut Compression {
    p.compression.get_or_insert_with(Box::default)
}

/// One `compression` line; `Ok(Some(text))` is a warning.
/// `in_defaults`: the line is in a `defaults` section.
pub(crate) fn keyword(
    p: &mut Proxy,
    words: &[&str],
    in_defaults: bool,
) -> Result<Option<String>, String> {
    let args = words.get(2..).unwrap_or_default();
    match words.get(1).copied() {
        Some("algo" | "algo-res") => {
            if args.is_empty() {
                return Err("'compression' expects <algorithm>.".to_string());
            }
            let algos = args
                .iter()
                .map(|a| algo(a))
                .collect::<Result<Vec<_>, _>>()?;
            settings(p).algos.extend(algos);
        }
        Some("type" | "type-res") => {
            if args.is_empty() {
                return Err("'compression' expects <type>.".to_string());
            }
            let s = settings(p);
            s.types.extend(args.iter().map(|t| t.to_string()));
        }
        Some("offload") => {
            // HAProxy ignores what follows the word.
            if in_defaults {
                return Ok(Some(
                    "'compression' : 'offload' ignored in 'defaults' section.".to_string(),
                ));
            }
            settings(p).offload = true;
        }
        Some("direction") => match args.first().copied() {
            Some("response") => settings(p).direction = CompressionDirection::Response,
            Some(d @ ("request" | "both")) => {
                return Err(format!(
                    "'compression direction {d}': compressing requests is not supported yet"
                ))
            }
            _ => return Err("'compression' expects 'request', 'response', or 'both'.".to_string()),
        },
        Some(k @ ("algo-req" | "type-req")) => {
            return Err(format!(
                "'compression {k}': compressing requests is not supported yet"
            ))
        }
        _ => {
            return Err("'compression' expects 'algo', 'type' 'direction' or 'offload'".to_string())
        }
    }
    Ok(None)
}

fn algo(name: &str) -> Result<CompressionAlgo, String> {
    Ok(match name {
        "identity" => CompressionAlgo::Identity,
        "gzip" => CompressionAlgo::Gzip,
        "deflate" => CompressionAlgo::Deflate,
        "raw-deflate" => CompressionAlgo::RawDeflate,
        _ => {
            return Err(format!(
                "'compression' : '{name}' is not a supported algorithm."
            ))
        }
    })
}

/// `filter NAME [ARGS]`: only `filter compression` is supported.
pub(crate) fn filter(p: &mut Proxy, words: &[&str]) -> Result<(), String> {
    match words.get(1).copied() {
        Some("compression") => {
            if let Some(extra) = words.get(2) {
                return Err(format!("'filter compression' : unknown keyword '{extra}'."));
            }
            let s = settings(p);
            if s.filter {
                return Err(format!(
                    "'filter' : '{}: Proxy supports only one compression filter",
                    p.name
                ));
            }
            s.filter = true;
            Ok(())
        }
        Some(f) if OTHER_FILTERS.contains(&f) => {
            Err(format!("'filter {f}' is not supported yet by luahost"))
        }
        Some(f) => Err(format!(
            "'filter' : unknown keyword '{f}'; luahost supports 'compression'"
        )),
        None => Err("'filter' expects a filter name such as 'compression'".to_string()),
    }
}
