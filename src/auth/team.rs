//! A manager's team, from the directory WeCom gives us: the members of the departments they lead
//! (WeCom's `is_leader_in_dept`) and of every department under those, and their direct reports.
//! The console's department filter reads the same tree.

use wecom_sdk::CorpId;

use crate::on_db;
use crate::platform::db::{Db, StoreError};

/// Departments `roots` and every department under them (not deleted), from the stored tree.
async fn subtree(db: &Db, corp_id: &str, roots: &[i64]) -> Result<Vec<i64>, StoreError> {
    const SQL: &str =
        "SELECT id, parent_id FROM department WHERE corp_id = $1 AND deleted_at_ms IS NULL";
    let all: Vec<(i64, Option<i64>)> = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .fetch_all(pool)
        .await)?;
    let mut found: Vec<i64> = roots
        .iter()
        .copied()
        .filter(|r| all.iter().any(|(id, _)| id == r))
        .collect();
    // Breadth-first over the parent links; a cycle in bad data ends when nothing new is found.
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for (id, up) in &all {
            if *up == Some(parent) && !found.contains(id) {
                found.push(*id);
            }
        }
        i += 1;
    }
    Ok(found)
}

fn ids(list: &str) -> impl Iterator<Item = i64> + '_ {
    list.split(',').filter_map(|d| d.trim().parse().ok())
}

/// The members of departments `roots` and of the departments under them (departed ones too:
/// their customers and alerts still belong to the department), sorted.
pub async fn members_under(
    db: &Db,
    corp_id: &str,
    roots: &[i64],
) -> Result<Vec<String>, StoreError> {
    const SQL: &str = "SELECT user_id, departments FROM staff WHERE corp_id = $1 ORDER BY user_id";
    let departments = subtree(db, corp_id, roots).await?;
    let staff: Vec<(String, String)> = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .fetch_all(pool)
        .await)?;
    Ok(staff
        .into_iter()
        .filter(|(_, in_depts)| ids(in_depts).any(|d| departments.contains(&d)))
        .map(|(user, _)| user)
        .collect())
}

/// `user_id`'s team: themself, the members under the departments they lead, and their direct
/// reports — sorted, without duplicates.
pub async fn team_of(db: &Db, corp_id: &CorpId, user_id: &str) -> Result<Vec<String>, StoreError> {
    const SQL: &str = "SELECT user_id, leads_departments, direct_leaders FROM staff \
        WHERE corp_id = $1";
    let rows: Vec<(String, String, String)> = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id.as_str())
        .fetch_all(pool)
        .await)?;
    let led: Vec<i64> = rows
        .iter()
        .find(|(u, _, _)| u == user_id)
        .map(|(_, leads, _)| ids(leads).collect())
        .unwrap_or_default();
    let mut team = members_under(db, corp_id.as_str(), &led).await?;
    team.push(user_id.to_owned());
    team.extend(
        rows.iter()
            .filter(|(_, _, leaders)| leaders.split(',').any(|l| l.trim() == user_id))
            .map(|(u, _, _)| u.clone()),
    );
    team.sort();
    team.dedup();
    Ok(team)
}
