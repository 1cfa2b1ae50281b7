export async function overviewPage() { return document.createTextNode('todo'); }
