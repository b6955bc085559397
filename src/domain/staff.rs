//! Staff members (成员) and departments, from `change_contact` callbacks, `user/get` and the
//! reconciliation. A member who leaves (`delete_user`, 离职) is marked departed with the time; the
//! mark survives later updates, because reassignment reads it.

use serde::Serialize;

use wecom_sdk::{CorpId, UserId};

use crate::on_db;
use crate::platform::db::{Db, StoreError};

/// A staff member as we store them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StaffMember {
    /// userid.
    pub user_id: String,
    /// Name.
    pub name: String,
    /// Department ids, comma-separated.
    pub departments: String,
    /// Main department.
    pub main_department: Option<i64>,
    /// Position.
    pub position: String,
    /// WeCom status: 1 active, 2 disabled, 4 not activated, 5 left.
    pub status: i64,
    /// 1 when the member has 客户联系 (is a follow user).
    pub has_customer_contact: i64,
    /// When they left, epoch ms.
    pub departed_at_ms: Option<i64>,
}

/// What we learnt about a member; `None` fields keep what is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaffUpdate {
    /// userid.
    pub user_id: String,
    /// Name.
    pub name: Option<String>,
    /// Department ids.
    pub departments: Option<Vec<i64>>,
    /// Main department.
    pub main_department: Option<i64>,
    /// Position.
    pub position: Option<String>,
    /// WeCom status.
    pub status: Option<i64>,
    /// Member has 客户联系.
    pub has_customer_contact: Option<bool>,
    /// Their direct leaders (userids).
    pub direct_leaders: Option<Vec<String>>,
    /// The departments they lead.
    pub leads_departments: Option<Vec<i64>>,
}

/// Inserts or updates a member, keeping stored values where the update says nothing.
pub async fn upsert(
    db: &Db,
    corp_id: &str,
    u: &StaffUpdate,
    now_ms: i64,
) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO staff (corp_id, user_id, name, departments, main_department, \
        position, status, has_customer_contact, updated_at_ms, direct_leaders, leads_departments) \
        VALUES ($1, $2, COALESCE($3, ''), COALESCE($4, ''), $5, COALESCE($6, ''), COALESCE($7, 1), \
        COALESCE($8, 0), $9, COALESCE($10, ''), COALESCE($11, '')) \
        ON CONFLICT (corp_id, user_id) DO UPDATE SET name = COALESCE($3, staff.name), \
        departments = COALESCE($4, staff.departments), \
        main_department = COALESCE($5, staff.main_department), \
        position = COALESCE($6, staff.position), status = COALESCE($7, staff.status), \
        has_customer_contact = COALESCE($8, staff.has_customer_contact), updated_at_ms = $9, \
        direct_leaders = COALESCE($10, staff.direct_leaders), \
        leads_departments = COALESCE($11, staff.leads_departments)";
    let departments = u.departments.as_ref().map(|d| {
        d.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    });
    let direct_leaders = u.direct_leaders.as_ref().map(|d| d.join(","));
    let leads = u.leads_departments.as_ref().map(|d| {
        d.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    });
    on_db!(db, |pool| sqlx::query(SQL)
        .bind(corp_id)
        .bind(&u.user_id)
        .bind(&u.name)
        .bind(&departments)
        .bind(u.main_department)
        .bind(&u.position)
        .bind(u.status)
        .bind(u.has_customer_contact.map(i64::from))
        .bind(now_ms)
        .bind(&direct_leaders)
        .bind(&leads)
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Marks a member departed at `at_ms` (kept if already set: the first departure time wins).
pub async fn mark_departed(
    db: &Db,
    corp_id: &CorpId,
    user_id: &UserId,
    at_ms: i64,
    now_ms: i64,
) -> Result<(), StoreError> {
    let (corp_id, user_id) = (corp_id.as_str(), user_id.as_str());
    const SQL: &str = "INSERT INTO staff (corp_id, user_id, status, departed_at_ms, updated_at_ms) \
        VALUES ($1, $2, 5, $3, $4) ON CONFLICT (corp_id, user_id) DO UPDATE SET status = 5, \
        departed_at_ms = COALESCE(staff.departed_at_ms, excluded.departed_at_ms), \
        updated_at_ms = excluded.updated_at_ms";
    on_db!(db, |pool| sqlx::query(SQL)
        .bind(corp_id)
        .bind(user_id)
        .bind(at_ms)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// One member.
pub async fn get(
    db: &Db,
    corp_id: &CorpId,
    user_id: &UserId,
) -> Result<Option<StaffMember>, StoreError> {
    let (corp_id, user_id) = (corp_id.as_str(), user_id.as_str());
    const SQL: &str = "SELECT user_id, name, departments, main_department, position, status, \
        has_customer_contact, departed_at_ms FROM staff WHERE corp_id = $1 AND user_id = $2";
    let row = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(user_id)
        .fetch_optional(pool)
        .await)?;
    Ok(row)
}

/// Members of one corp, by userid.
pub async fn list(db: &Db, corp_id: &str) -> Result<Vec<StaffMember>, StoreError> {
    const SQL: &str = "SELECT user_id, name, departments, main_department, position, status, \
        has_customer_contact, departed_at_ms FROM staff WHERE corp_id = $1 ORDER BY user_id";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// The userids of the corp's members we know by id only (no name yet).
pub async fn unnamed(
    db: &Db,
    corp_id: &str,
) -> Result<std::collections::HashSet<String>, StoreError> {
    const SQL: &str =
        "SELECT user_id FROM staff WHERE corp_id = $1 AND (name = '' OR name = user_id)";
    let rows: Vec<String> = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .fetch_all(pool)
        .await)?;
    Ok(rows.into_iter().collect())
}

/// A department as WeCom reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Department {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Parent id.
    pub parent_id: Option<i64>,
    /// WeCom's `order`.
    pub sort_order: i64,
}

/// Inserts or updates a department (a `None` name keeps the stored one).
pub async fn upsert_department(
    db: &Db,
    corp_id: &str,
    id: i64,
    name: Option<&str>,
    parent_id: Option<i64>,
    sort_order: Option<i64>,
    now_ms: i64,
) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO department (corp_id, id, name, parent_id, sort_order, updated_at_ms) \
        VALUES ($1, $2, COALESCE($3, ''), $4, COALESCE($5, 0), $6) \
        ON CONFLICT (corp_id, id) DO UPDATE SET name = COALESCE($3, department.name), \
        parent_id = COALESCE($4, department.parent_id), \
        sort_order = COALESCE($5, department.sort_order), deleted_at_ms = NULL, updated_at_ms = $6";
    on_db!(db, |pool| sqlx::query(SQL)
        .bind(corp_id)
        .bind(id)
        .bind(name)
        .bind(parent_id)
        .bind(sort_order)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Marks a department deleted.
pub async fn delete_department(
    db: &Db,
    corp_id: &str,
    id: i64,
    now_ms: i64,
) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE department SET deleted_at_ms = COALESCE(deleted_at_ms, $3), \
        updated_at_ms = $3 WHERE corp_id = $1 AND id = $2";
    on_db!(db, |pool| sqlx::query(SQL)
        .bind(corp_id)
        .bind(id)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Departments that are not deleted.
pub async fn departments(db: &Db, corp_id: &str) -> Result<Vec<Department>, StoreError> {
    const SQL: &str = "SELECT id, name, parent_id, sort_order FROM department WHERE corp_id = $1 \
        AND deleted_at_ms IS NULL ORDER BY id";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}
