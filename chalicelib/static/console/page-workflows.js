export async function workflowsPage() { return document.createTextNode('todo'); }
export async function workflowPage() { return document.createTextNode('todo'); }
export async function runPage() { return document.createTextNode('todo'); }
export async function approvalsPage() { return document.createTextNode('todo'); }
