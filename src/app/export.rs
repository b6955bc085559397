//! `scrm export`: a corp's customers, follow relations (with their tags), the corp tag library and
//! the notes as CSV files — what a company takes with it when it leaves, in a form any spreadsheet
//! opens.
//!
//! - UTF-8 with a byte-order mark (Excel on Chinese Windows reads a CSV without one as GBK);
//!   RFC 4180 quoting; times as China time `YYYY-MM-DD HH:MM:SS`.
//! - A cell that a spreadsheet would run as a formula (it starts with `=`, `+`, `-`, `@`, a tab or a
//!   carriage return: a customer chooses their own WeChat name) is written with a leading `'`.
//! - Read in pages of [`PAGE`] rows by key, so memory stays flat on a corp of any size; each file is
//!   written to `*.csv.part` and renamed when complete.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::on_db;
use crate::platform::db::{Db, StoreError};

/// Rows read per query.
pub const PAGE: i64 = 2_000;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A query.
    #[error("reading the database: {0}")]
    Query(#[from] sqlx::Error),
    /// Writing a file.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The files written and their rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exported {
    /// `(file name, data rows)`, in the order written.
    pub files: Vec<(&'static str, u64)>,
}

/// Writes `customers.csv`, `relations.csv`, `tags.csv` and `notes.csv` of `corp_id` into `dir`
/// (created if missing); `progress` is told the file and the rows written so far, page by page.
pub async fn export(
    db: &Db,
    corp_id: &str,
    dir: &Path,
    progress: impl FnMut(&str, u64),
) -> Result<Exported, ExportError> {
    export_paged(db, corp_id, dir, PAGE, progress).await
}

/// [`export`] reading `page` rows per query (any page size writes the same files).
pub async fn export_paged(
    db: &Db,
    corp_id: &str,
    dir: &Path,
    page: i64,
    mut progress: impl FnMut(&str, u64),
) -> Result<Exported, ExportError> {
    let page = page.max(1);
    std::fs::create_dir_all(dir).map_err(|source| ExportError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let tag_names = tag_names(db, corp_id).await?;
    let mut out = Exported::default();
    for file in ["customers.csv", "relations.csv", "tags.csv", "notes.csv"] {
        let mut w = CsvFile::create(dir, file)?;
        let rows = match file {
            "customers.csv" => customers(db, corp_id, page, &mut w, &mut progress).await?,
            "relations.csv" => {
                relations(db, corp_id, page, &tag_names, &mut w, &mut progress).await?
            }
            "tags.csv" => tags(db, corp_id, &mut w).await?,
            _ => notes(db, corp_id, page, &mut w, &mut progress).await?,
        };
        w.finish()?;
        progress(file, rows);
        out.files.push((file, rows));
    }
    Ok(out)
}

/// Every tag id of the corp (deleted ones too: a relation may still name one) and its name.
async fn tag_names(db: &Db, corp_id: &str) -> Result<HashMap<String, String>, StoreError> {
    const SQL: &str = "SELECT tag_id, name FROM tag WHERE corp_id = $1";
    let rows: Vec<(String, String)> = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .fetch_all(pool)
        .await)?;
    Ok(rows.into_iter().collect())
}

async fn customers(
    db: &Db,
    corp_id: &str,
    page_size: i64,
    w: &mut CsvFile,
    progress: &mut impl FnMut(&str, u64),
) -> Result<u64, ExportError> {
    type Row = (
        String,
        String,
        i64,
        i64,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
    );
    const SQL: &str = "SELECT c.external_user_id, c.name, c.customer_type, c.gender, c.corp_name, \
        c.corp_full_name, c.position, c.unionid, s.stage FROM customer c \
        LEFT JOIN customer_stage s ON s.corp_id = c.corp_id AND s.external_user_id = c.external_user_id \
        WHERE c.corp_id = $1 AND c.external_user_id > $2 ORDER BY c.external_user_id LIMIT $3";
    w.row(&[
        "external_userid",
        "姓名 name",
        "类型 type",
        "性别 gender",
        "企业简称 corp_name",
        "企业全称 corp_full_name",
        "职位 position",
        "unionid",
        "阶段 stage",
    ])?;
    pages(
        "customers.csv",
        page_size,
        w,
        progress,
        async |after: &String| -> Result<Vec<Row>, sqlx::Error> {
            on_db!(db, |pool| sqlx::query_as(SQL)
                .bind(corp_id)
                .bind(after)
                .bind(page_size)
                .fetch_all(pool)
                .await)
        },
        |r| r.0.clone(),
        |w, (ext, name, kind, gender, corp, corp_full, position, unionid, stage)| {
            let kind = match kind {
                1 => "微信",
                2 => "企业微信",
                _ => "",
            };
            let gender = match gender {
                1 => "男",
                2 => "女",
                _ => "",
            };
            w.row(&[
                ext,
                name,
                kind,
                gender,
                corp,
                corp_full,
                position,
                unionid.as_deref().unwrap_or(""),
                stage.as_deref().unwrap_or(""),
            ])
        },
    )
    .await
}

async fn relations(
    db: &Db,
    corp_id: &str,
    page_size: i64,
    tag_names: &HashMap<String, String>,
    w: &mut CsvFile,
    progress: &mut impl FnMut(&str, u64),
) -> Result<u64, ExportError> {
    type Row = (
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        i64,
        Option<String>,
        Option<i64>,
        String,
        Option<i64>,
    );
    const SQL: &str = "SELECT r.user_id, COALESCE(st.name, ''), r.external_user_id, \
        COALESCE(c.name, ''), r.remark, r.description, r.remark_corp_name, r.remark_mobiles, \
        r.tag_ids, r.add_way, r.state, r.added_at_ms, r.status, r.ended_at_ms \
        FROM follow_relation r \
        LEFT JOIN staff st ON st.corp_id = r.corp_id AND st.user_id = r.user_id \
        LEFT JOIN customer c ON c.corp_id = r.corp_id AND c.external_user_id = r.external_user_id \
        WHERE r.corp_id = $1 AND (r.user_id > $2 OR (r.user_id = $2 AND r.external_user_id > $3)) \
        ORDER BY r.user_id, r.external_user_id LIMIT $4";
    w.row(&[
        "userid",
        "员工 staff",
        "external_userid",
        "客户 customer",
        "备注 remark",
        "描述 description",
        "备注企业 remark_corp_name",
        "备注手机号 remark_mobiles",
        "企业标签 tags",
        "添加方式 add_way",
        "渠道 state",
        "添加时间 added_at",
        "状态 status",
        "结束时间 ended_at",
    ])?;
    pages(
        "relations.csv",
        page_size,
        w,
        progress,
        async |(user, ext): &(String, String)| -> Result<Vec<Row>, sqlx::Error> {
            on_db!(db, |pool| sqlx::query_as(SQL)
                .bind(corp_id)
                .bind(user)
                .bind(ext)
                .bind(page_size)
                .fetch_all(pool)
                .await)
        },
        |r| (r.0.clone(), r.2.clone()),
        |w, r| {
            let mobiles = json_list(&r.7).join(";");
            let tags = json_list(&r.8)
                .into_iter()
                .map(|id| tag_names.get(&id).cloned().unwrap_or(id))
                .collect::<Vec<_>>()
                .join(";");
            let status = match r.12.as_str() {
                "active" => "跟进中",
                "deleted_by_staff" => "员工删除客户",
                "deleted_by_customer" => "客户删除员工",
                "transferred" => "已转接",
                "vanished" => "已消失",
                other => other,
            };
            w.row(&[
                &r.0,
                &r.1,
                &r.2,
                &r.3,
                &r.4,
                &r.5,
                &r.6,
                &mobiles,
                &tags,
                &r.9.to_string(),
                r.10.as_deref().unwrap_or(""),
                &china_time(r.11),
                status,
                &china_time(r.13),
            ])
        },
    )
    .await
}

async fn tags(db: &Db, corp_id: &str, w: &mut CsvFile) -> Result<u64, ExportError> {
    type Row = (String, String, String, String, i64, Option<i64>);
    const SQL: &str = "SELECT t.group_id, COALESCE(g.name, ''), t.tag_id, t.name, t.sort_order, \
        t.deleted_at_ms FROM tag t \
        LEFT JOIN tag_group g ON g.corp_id = t.corp_id AND g.group_id = t.group_id \
        WHERE t.corp_id = $1 ORDER BY t.group_id, t.sort_order, t.tag_id";
    w.row(&[
        "group_id",
        "标签组 group",
        "tag_id",
        "标签 tag",
        "排序 order",
        "已删除 deleted_at",
    ])?;
    let rows: Vec<Row> = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .fetch_all(pool)
        .await)?;
    for (group_id, group, tag_id, tag, order, deleted) in &rows {
        w.row(&[
            group_id,
            group,
            tag_id,
            tag,
            &order.to_string(),
            &china_time(*deleted),
        ])?;
    }
    Ok(rows.len() as u64)
}

async fn notes(
    db: &Db,
    corp_id: &str,
    page_size: i64,
    w: &mut CsvFile,
    progress: &mut impl FnMut(&str, u64),
) -> Result<u64, ExportError> {
    type Row = (i64, String, String, String, Option<String>, i64, i64);
    const SQL: &str = "SELECT id, external_user_id, author, body, attachment_url, created_at_ms, \
        updated_at_ms FROM note WHERE corp_id = $1 AND id > $2 ORDER BY id LIMIT $3";
    w.row(&[
        "id",
        "external_userid",
        "作者 author",
        "内容 body",
        "附件 attachment",
        "创建时间 created_at",
        "修改时间 updated_at",
    ])?;
    pages(
        "notes.csv",
        page_size,
        w,
        progress,
        async |after: &i64| -> Result<Vec<Row>, sqlx::Error> {
            on_db!(db, |pool| sqlx::query_as(SQL)
                .bind(corp_id)
                .bind(after)
                .bind(page_size)
                .fetch_all(pool)
                .await)
        },
        |r| r.0,
        |w, (id, ext, author, body, attachment, created, updated)| {
            w.row(&[
                &id.to_string(),
                ext,
                author,
                body,
                attachment.as_deref().unwrap_or(""),
                &china_time(Some(*created)),
                &china_time(Some(*updated)),
            ])
        },
    )
    .await
}

/// Writes a table page by page: `fetch` the rows after a key (the default key: from the start),
/// `write` each, tell `progress`, until a page comes back short.
async fn pages<R, K: Default>(
    file: &str,
    page_size: i64,
    w: &mut CsvFile,
    progress: &mut impl FnMut(&str, u64),
    mut fetch: impl AsyncFnMut(&K) -> Result<Vec<R>, sqlx::Error>,
    key: impl Fn(&R) -> K,
    mut write: impl FnMut(&mut CsvFile, &R) -> Result<(), ExportError>,
) -> Result<u64, ExportError> {
    let mut after = K::default();
    let mut rows = 0u64;
    loop {
        let page = fetch(&after).await?;
        let Some(last) = page.last() else { break };
        after = key(last);
        for r in &page {
            write(w, r)?;
        }
        rows += page.len() as u64;
        progress(file, rows);
        if (page.len() as i64) < page_size {
            break;
        }
    }
    Ok(rows)
}

/// The strings of a stored JSON array (`[]` or anything else unreadable: none).
fn json_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// Epoch ms as China time (UTC+8, no daylight saving), empty for none.
fn china_time(ms: Option<i64>) -> String {
    let Some(ms) = ms else {
        return String::new();
    };
    let china = chrono::FixedOffset::east_opt(8 * 3600);
    match (chrono::DateTime::from_timestamp_millis(ms), china) {
        (Some(t), Some(china)) => t
            .with_timezone(&china)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        _ => ms.to_string(),
    }
}

/// One CSV file being written (`name.part`, renamed when finished).
struct CsvFile {
    out: std::io::BufWriter<std::fs::File>,
    part: PathBuf,
    path: PathBuf,
}

impl CsvFile {
    fn create(dir: &Path, name: &str) -> Result<Self, ExportError> {
        let path = dir.join(name);
        let part = dir.join(format!("{name}.part"));
        let file = std::fs::File::create(&part).map_err(|source| ExportError::Io {
            path: part.clone(),
            source,
        })?;
        let mut w = Self {
            out: std::io::BufWriter::new(file),
            part,
            path,
        };
        w.write(b"\xEF\xBB\xBF")?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ExportError> {
        self.out.write_all(bytes).map_err(|source| ExportError::Io {
            path: self.part.clone(),
            source,
        })
    }

    fn row(&mut self, cells: &[&str]) -> Result<(), ExportError> {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            push_cell(&mut line, cell);
        }
        line.push_str("\r\n");
        self.write(line.as_bytes())
    }

    fn finish(self) -> Result<(), ExportError> {
        let Self { out, part, path } = self;
        let file = out.into_inner().map_err(|e| ExportError::Io {
            path: part.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(|source| ExportError::Io {
            path: part.clone(),
            source,
        })?;
        std::fs::rename(&part, &path).map_err(|source| ExportError::Io { path, source })
    }
}

/// One cell, RFC 4180: quoted when it holds a comma, a quote or a line break (quotes doubled); a
/// leading `'` when a spreadsheet would read it as a formula.
fn push_cell(line: &mut String, cell: &str) {
    let formula = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quoted = cell.contains([',', '"', '\n', '\r']);
    if quoted {
        line.push('"');
    }
    if formula {
        line.push('\'');
    }
    for c in cell.chars() {
        if c == '"' {
            line.push('"');
        }
        line.push(c);
    }
    if quoted {
        line.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(s: &str) -> String {
        let mut line = String::new();
        push_cell(&mut line, s);
        line
    }

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        assert_eq!(cell("王总"), "王总");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("说\"好\""), "\"说\"\"好\"\"\"");
        assert_eq!(cell("第一行\n第二行"), "\"第一行\n第二行\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("-1"), "'-1");
        assert_eq!(cell("@SUM"), "'@SUM");
    }

    #[test]
    fn times_are_china_time() {
        assert_eq!(china_time(Some(0)), "1970-01-01 08:00:00");
        assert_eq!(china_time(None), "");
        assert_eq!(json_list("[\"a\",\"b\"]"), vec!["a", "b"]);
        assert!(json_list("oops").is_empty());
    }
}
