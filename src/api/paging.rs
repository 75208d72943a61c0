//! Telnyx-style paging: `page[number]` (from 1) and `page[size]` (default 20, at most 250),
//! answered with `meta {page_number, page_size, total_pages, total_results}`.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use warden_domain::values::ValidationError;

use super::error::ApiResult;

pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 250;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub number: usize,
    pub size: usize,
}

impl Page {
    pub fn from_query(query: &BTreeMap<String, String>) -> ApiResult<Self> {
        let number = parse(query, "page[number]", 1, usize::MAX)?.unwrap_or(1);
        let size = parse(query, "page[size]", 1, MAX_PAGE_SIZE)?.unwrap_or(DEFAULT_PAGE_SIZE);
        Ok(Self { number, size })
    }

    /// How many rows come before this page.
    pub fn offset(&self) -> usize {
        self.number.saturating_sub(1).saturating_mul(self.size)
    }

    /// One page of `rows`, with the list meta.
    pub fn list(&self, rows: Vec<Value>) -> Value {
        let total = rows.len();
        let data: Vec<Value> = rows
            .into_iter()
            .skip(self.offset())
            .take(self.size)
            .collect();
        self.window(data, total)
    }

    /// This page's rows, already cut out of `total` rows, with the list meta.
    pub fn window(&self, data: Vec<Value>, total: usize) -> Value {
        json!({
            "data": data,
            "meta": {
                "page_number": self.number,
                "page_size": self.size,
                "total_pages": total.div_ceil(self.size),
                "total_results": total,
            },
        })
    }
}

fn parse(
    query: &BTreeMap<String, String>,
    name: &str,
    min: usize,
    max: usize,
) -> ApiResult<Option<usize>> {
    let Some(raw) = query.get(name) else {
        return Ok(None);
    };
    match raw.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(ValidationError::new(
            name,
            "invalid_value",
            if max == usize::MAX {
                format!("must be a whole number of at least {min}")
            } else {
                format!("must be a whole number from {min} to {max}")
            },
        )
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn pages_and_meta() {
        let page = Page::from_query(&q(&[("page[number]", "2"), ("page[size]", "2")])).unwrap();
        let out = page.list((0..5).map(|i| json!(i)).collect());
        assert_eq!(out["data"], json!([2, 3]));
        assert_eq!(out["meta"]["total_pages"], 3);
        assert_eq!(out["meta"]["total_results"], 5);
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(Page::from_query(&q(&[("page[size]", "251")])).is_err());
        assert!(Page::from_query(&q(&[("page[number]", "0")])).is_err());
        assert!(Page::from_query(&q(&[("page[size]", "x")])).is_err());
        assert_eq!(
            Page::from_query(&q(&[])).unwrap(),
            Page {
                number: 1,
                size: 20
            }
        );
    }
}
