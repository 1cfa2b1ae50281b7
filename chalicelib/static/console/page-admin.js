export async function adminUsersPage() { return document.createTextNode('todo'); }
export async function adminAuditPage() { return document.createTextNode('todo'); }
export async function adminDlqPage() { return document.createTextNode('todo'); }
export async function adminCachePage() { return document.createTextNode('todo'); }
