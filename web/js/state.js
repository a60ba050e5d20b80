// Who is signed in, kept in memory only: a reload asks the server again.

let user = null;

export function currentUser() {
  return user;
}

export function setCurrentUser(value) {
  user = value;
}

export function isAdmin() {
  return Boolean(user && user.is_admin);
}

// Whether the signed-in user may publish to, roll back or delete a skill in `scope`,
// by the server's rule: admins write `shared`, members write their groups, and a
// `private` skill is always the viewer's own.
export function mayWriteScope(scope) {
  if (!user) return false;
  if (scope === 'shared') return user.is_admin;
  if (scope && scope.startsWith('group:')) return (user.groups || []).includes(scope.slice('group:'.length));
  return scope === 'private';
}
