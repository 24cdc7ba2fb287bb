//! `actor_id` bound to the caller (API.md, Security): with auth on, an
//! empty `actor_id` becomes the principal, the principal itself is fine,
//! anything else is ACTOR_MISMATCH unless the caller is an admin (and then
//! the events record `authenticated_as`). `system` is central-manager's own
//! and never accepted from a client. With auth off, `actor_id` is required
//! and taken as given, as before.

use super::{Caller, Role};
use crate::domain::ActorId;
use crate::error::{Error, Result};

/// The actor of a mutating call by `caller` claiming `claimed`.
pub fn bind(claimed: &str, caller: Option<&Caller>) -> Result<ActorId> {
    let Some(caller) = caller else {
        return ActorId::parse(claimed);
    };
    let claimed = claimed.trim();
    let actor = if claimed.is_empty() {
        ActorId::parse(&caller.principal)?
    } else {
        ActorId::parse(claimed)?
    };
    if actor.as_str() == ActorId::SYSTEM {
        return Err(Error::ActorMismatch(format!(
            "actor_id {:?} is reserved for central-manager itself",
            ActorId::SYSTEM
        )));
    }
    if actor.as_str() == caller.principal {
        return Ok(actor);
    }
    if caller.role == Role::Admin {
        return Ok(actor.authenticated_as(&caller.principal));
    }
    Err(Error::ActorMismatch(format!(
        "actor_id {:?} is not the caller {:?}; only an admin may act as someone else",
        actor.as_str(),
        caller.principal
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Via;

    fn caller(p: &str, role: Role) -> Caller {
        Caller {
            principal: p.into(),
            role,
            via: Via::Token,
        }
    }

    #[test]
    fn auth_off_keeps_todays_rules() {
        assert!(matches!(bind("", None), Err(Error::MissingActorId)));
        assert_eq!(bind(" bob ", None).unwrap().as_str(), "bob");
        assert_eq!(
            bind("bob", None).unwrap().authenticated_as_principal(),
            None
        );
    }

    #[test]
    fn the_caller_acts_as_itself() {
        let alice = caller("alice", Role::Operator);
        let a = bind("", Some(&alice)).unwrap();
        assert_eq!(a.as_str(), "alice");
        assert_eq!(a.authenticated_as_principal(), None);
        assert_eq!(bind(" alice", Some(&alice)).unwrap().as_str(), "alice");
        assert!(matches!(
            bind("bob", Some(&alice)),
            Err(Error::ActorMismatch(_))
        ));
        assert!(matches!(
            bind("system", Some(&alice)),
            Err(Error::ActorMismatch(_))
        ));
    }

    #[test]
    fn an_admin_acts_for_others_on_the_record() {
        let root = caller("root", Role::Admin);
        let a = bind("bob", Some(&root)).unwrap();
        assert_eq!(a.as_str(), "bob");
        assert_eq!(a.authenticated_as_principal(), Some("root"));
        assert_eq!(
            bind("root", Some(&root))
                .unwrap()
                .authenticated_as_principal(),
            None
        );
        assert!(matches!(
            bind("system", Some(&root)),
            Err(Error::ActorMismatch(_))
        ));
    }
}
