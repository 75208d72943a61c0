//! The permission catalogue. A sub-user holds the union of their permission groups'
//! permissions; the organization owner holds all of them. `…:manage` implies `…:read`.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One permission, named `area:level` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    OrganizationRead,
    OrganizationManage,
    SecurityManage,
    UsersRead,
    UsersManage,
    PermissionGroupsRead,
    PermissionGroupsManage,
    ApiKeysManage,
    WebhooksRead,
    WebhooksManage,
    VerifyRead,
    VerifyManage,
    AuditRead,
}

impl Permission {
    /// The whole catalogue, in the order `GET /v2/permissions` lists it.
    pub const ALL: [Permission; 13] = [
        Permission::OrganizationRead,
        Permission::OrganizationManage,
        Permission::SecurityManage,
        Permission::UsersRead,
        Permission::UsersManage,
        Permission::PermissionGroupsRead,
        Permission::PermissionGroupsManage,
        Permission::ApiKeysManage,
        Permission::WebhooksRead,
        Permission::WebhooksManage,
        Permission::VerifyRead,
        Permission::VerifyManage,
        Permission::AuditRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::OrganizationRead => "organization:read",
            Permission::OrganizationManage => "organization:manage",
            Permission::SecurityManage => "security:manage",
            Permission::UsersRead => "users:read",
            Permission::UsersManage => "users:manage",
            Permission::PermissionGroupsRead => "permission_groups:read",
            Permission::PermissionGroupsManage => "permission_groups:manage",
            Permission::ApiKeysManage => "api_keys:manage",
            Permission::WebhooksRead => "webhooks:read",
            Permission::WebhooksManage => "webhooks:manage",
            Permission::VerifyRead => "verify:read",
            Permission::VerifyManage => "verify:manage",
            Permission::AuditRead => "audit:read",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Permission::OrganizationRead => "View the organization's profile.",
            Permission::OrganizationManage => "Change the organization's profile.",
            Permission::SecurityManage => {
                "Set and check the security passphrase and port-out PIN; set the two-factor policy."
            }
            Permission::UsersRead => "List members and invitations.",
            Permission::UsersManage => {
                "Invite, remove, disable and enable members, change their groups, reset their two-factor authentication."
            }
            Permission::PermissionGroupsRead => "List permission groups.",
            Permission::PermissionGroupsManage => "Create, change and delete permission groups.",
            Permission::ApiKeysManage => "Create, rotate and revoke one's own API keys.",
            Permission::WebhooksRead => "View webhook endpoints and deliveries.",
            Permission::WebhooksManage => "Create, change and delete webhook endpoints.",
            Permission::VerifyRead => "View verify profiles and verifications.",
            Permission::VerifyManage => "Manage verify profiles; send and check verifications.",
            Permission::AuditRead => "Read the audit log and event history.",
        }
    }

    pub fn parse(name: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// The permission that implies this one (`users:manage` for `users:read`).
    fn implied_by(self) -> Option<Permission> {
        match self {
            Permission::OrganizationRead => Some(Permission::OrganizationManage),
            Permission::UsersRead => Some(Permission::UsersManage),
            Permission::PermissionGroupsRead => Some(Permission::PermissionGroupsManage),
            Permission::WebhooksRead => Some(Permission::WebhooksManage),
            Permission::VerifyRead => Some(Permission::VerifyManage),
            _ => None,
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Permission {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Permission::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown permission `{name}`")))
    }
}

/// A set of permissions (serialized as a sorted list of names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PermissionSet(BTreeSet<Permission>);

impl PermissionSet {
    pub fn all() -> Self {
        Self(Permission::ALL.into_iter().collect())
    }

    pub fn allows(&self, permission: Permission) -> bool {
        self.0.contains(&permission)
            || permission
                .implied_by()
                .is_some_and(|stronger| self.0.contains(&stronger))
    }

    /// Whether every permission of `other` is allowed by this set.
    pub fn covers(&self, other: &PermissionSet) -> bool {
        other.0.iter().all(|p| self.allows(*p))
    }

    pub fn extend(&mut self, other: &PermissionSet) {
        self.0.extend(other.0.iter().copied());
    }

    pub fn iter(&self) -> impl Iterator<Item = Permission> + '_ {
        self.0.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let names: BTreeSet<_> = Permission::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(names.len(), Permission::ALL.len());
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
        assert_eq!(Permission::parse("users:delete"), None);
    }

    #[test]
    fn manage_implies_read_but_not_the_reverse() {
        let manage: PermissionSet = [Permission::UsersManage].into_iter().collect();
        assert!(manage.allows(Permission::UsersRead));
        let read: PermissionSet = [Permission::UsersRead].into_iter().collect();
        assert!(!read.allows(Permission::UsersManage));
        assert!(manage.covers(&read));
        assert!(!read.covers(&manage));
    }

    #[test]
    fn serializes_as_sorted_names() {
        let set: PermissionSet = [Permission::AuditRead, Permission::UsersRead]
            .into_iter()
            .collect();
        assert_eq!(
            serde_json::to_string(&set).unwrap_or_default(),
            r#"["users:read","audit:read"]"#
        );
        let err = serde_json::from_str::<PermissionSet>(r#"["users:fly"]"#);
        assert!(err.is_err());
    }
}
