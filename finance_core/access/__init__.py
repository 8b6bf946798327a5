"""Who may do what: dashboard users and sessions, sign-in rules, API tokens, roles, audit."""
