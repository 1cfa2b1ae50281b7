// The console shell: sign-in gate, navigation, and a hash router (#/tasks/<id>) so pages change without
// reloading (the session lives in memory; a reload signs you out by design).
import { accessToken, currentUser, isAdmin, onSessionChange, signOut } from "./api.js";
import { connect } from "./live.js";
import { clear, errorBox, h } from "./ui.js";
import { authPage } from "./page-auth.js";
import { overviewPage } from "./page-overview.js";
import { agentsPage, agentPage } from "./page-agents.js";
import { tasksPage, taskPage } from "./page-tasks.js";
import { workflowsPage, workflowPage, runPage, approvalsPage } from "./page-workflows.js";
import { webhooksPage, webhookPage } from "./page-webhooks.js";
import { adminUsersPage, adminAuditPage, adminDlqPage, adminCachePage } from "./page-admin.js";

// Adding a page: one entry here (pattern, title, render, nav label or null, admin-only?). docs/console.md.
const ROUTES = [
  ["/", "Overview", overviewPage, "Overview"],
  ["/agents", "Agents", agentsPage, "Agents"],
  ["/agents/:id", "Agent", agentPage],
  ["/tasks", "Tasks", tasksPage, "Tasks"],
  ["/tasks/:id", "Task", taskPage],
  ["/workflows", "Workflows", workflowsPage, "Workflows"],
  ["/workflows/:id", "Workflow", workflowPage],
  ["/runs/:id", "Run", runPage],
  ["/approvals", "Approvals", approvalsPage, "Approvals"],
  ["/webhooks", "Webhooks", webhooksPage, "Webhooks"],
  ["/webhooks/:id", "Webhook", webhookPage],
  ["/admin/users", "Users", adminUsersPage, "Users", true],
  ["/admin/audit", "Audit log", adminAuditPage, "Audit log", true],
  ["/admin/dlq", "Dead-letter queues", adminDlqPage, "DLQs", true],
  ["/admin/cache", "Cache", adminCachePage, "Cache", true],
];

const root = document.getElementById("app");
let cleanups = [];
let notice = null;

function match(path) {
  for (const [pattern, title, render, , admin] of ROUTES) {
    const keys = [];
    const re = new RegExp(`^${pattern.replace(/:([a-z]+)/g, (_, k) => { keys.push(k); return "([^/]+)"; })}$`);
    const m = path.match(re);
    if (m) return { title, render, admin, params: Object.fromEntries(keys.map((k, i) => [k, decodeURIComponent(m[i + 1])])) };
  }
  return null;
}

function nav(path) {
  const items = ROUTES.filter(([, , , label, admin]) => label && (!admin || isAdmin()));
  const user = currentUser();
  return h("header", { class: "top" },
    h("a", { class: "skip", href: "#main" }, "Skip to content"),
    h("span", { class: "brand" }, "YMERA"),
    h("nav", { "aria-label": "Main" }, h("ul", {}, items.map(([p, , , label, admin]) => {
      const active = p === "/" ? path === "/" : path === p || path.startsWith(`${p}/`);
      // Following the link of the page you are on redraws it (the hash does not change, so no hashchange).
      const again = (e) => { if (location.hash === `#${p}`) { e.preventDefault(); render(); } };
      return h("li", { class: admin ? "admin" : null }, h("a", { href: `#${p}`, "aria-current": active ? "page" : null, onclick: again }, label));
    }))),
    h("div", { class: "who" }, h("span", {}, `${user.username || "signed in"} (${user.role})`),
      h("button", { type: "button", class: "small", onclick: () => signOut() }, "Sign out")));
}

async function render() {
  cleanups.forEach((fn) => fn());
  cleanups = [];
  const path = (location.hash.replace(/^#/, "") || "/").split("?")[0];
  if (!currentUser()) {
    document.title = "Sign in · YMERA";
    clear(root, authPage(notice));
    return;
  }
  const route = match(path);
  const main = h("main", { id: "main", tabindex: "-1" });
  clear(root, nav(path), main);
  if (!route) { clear(main, h("h1", {}, "Not found"), h("p", {}, "No page here. "), h("a", { href: "#/" }, "Overview")); return; }
  document.title = `${route.title} · YMERA`;
  if (route.admin && !isAdmin()) { clear(main, errorBox({ code: "AUTHORIZATION_ERROR", message: "This page is for admins (the API refuses its calls too)." })); return; }
  const ctx = { params: route.params, query: new URLSearchParams(location.hash.split("?")[1] || ""), onLeave: (fn) => cleanups.push(fn) };
  try {
    const view = await route.render(ctx);
    if (main.isConnected) clear(main, view);
  } catch (err) {
    clear(main, h("h1", {}, route.title), errorBox(err));
  }
}

onSessionChange((user, reason) => {
  notice = user ? null : reason;
  if (user) { connect(accessToken); if (location.hash.startsWith("#/sign")) location.hash = "#/"; }
  render();
});
window.addEventListener("hashchange", render);
render();
