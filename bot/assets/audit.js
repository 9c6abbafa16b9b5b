// The audit view: searches the audit log through /api/audit, pages with
// `before`, links the exports of what the filters show, and shows the
// digest of the period with its charts. Every text from the log is put in
// with textContent: a command can never become markup.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };
  const str = (v) => (typeof v === 'string' ? v : '');
  const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  const iso = (ms) => (num(ms) === null ? '' : new Date(ms).toISOString().replace('T', ' ').slice(0, 19) + 'Z');

  let next = null;
  // Rows per page: `/audit?limit=N` (1 to 500), else 50.
  const perPage = (() => {
    const n = Number(new URLSearchParams(location.search).get('limit'));
    return Number.isInteger(n) && n >= 1 && n <= 500 ? n : 50;
  })();

  // The filters as query parameters; the dates in the reviewer's zone.
  function params() {
    const form = $('search');
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(form).entries()) {
      const s = String(v).trim();
      if (!s) continue;
      if (k === 'from' || k === 'until') {
        const t = new Date(s).getTime();
        if (Number.isFinite(t)) p.set(k, String(t));
      } else {
        p.set(k, s);
      }
    }
    return p;
  }

  function banner(text) {
    const b = $('banner');
    b.textContent = text;
    b.hidden = !text;
  }

  function row(r) {
    const tr = el('tr');
    const what = str(r.kind) === 'verdict' ? 'verdict: ' + str(r.decision) : str(r.kind).replace(/^request\./, '');
    tr.append(
      el('td', 'when', iso(r.at)),
      el('td', 'kind', what),
      el('td', 'plain', str(r.runner)),
      el('td', 'cmd', str(r.command)),
      el('td', 'plain', Array.isArray(r.rules) ? r.rules.map(str).join(' ') : ''),
      el('td', 'plain', str(r.agent)),
      el('td', 'plain', str(r.decided_by) + (str(r.reason) ? ': ' + str(r.reason) : '')),
    );
    tr.dataset.seq = String(num(r.seq));
    return tr;
  }

  async function get(url) {
    const res = await fetch(url, { headers: { Accept: 'application/json' }, credentials: 'same-origin', cache: 'no-store', redirect: 'error' });
    if (res.status === 401) {
      banner('Your session ended: open a new login link.');
      throw new Error('unauthorized');
    }
    if (!res.ok) throw new Error('the bot answered ' + res.status);
    return res.json();
  }

  async function search(more) {
    const p = params();
    $('export-csv').href = '/api/audit?' + p.toString() + '&format=csv&limit=10000';
    $('export-json').href = '/api/audit?' + p.toString() + '&format=json&limit=10000';
    if (more && next !== null) p.set('before', String(next));
    p.set('limit', String(perPage));
    let data;
    try {
      data = await get('/api/audit?' + p.toString());
    } catch (e) {
      banner('Cannot search the audit log: ' + e.message);
      return;
    }
    banner('');
    const body = $('rows');
    if (!more) body.replaceChildren();
    const rows = Array.isArray(data.rows) ? data.rows : [];
    for (const r of rows) body.append(row(r));
    next = num(data.next);
    $('older').hidden = next === null;
    $('found-empty').hidden = body.children.length > 0;
    if (!more) digest(p);
  }

  async function digest(p) {
    const q = new URLSearchParams();
    if (p.get('from')) q.set('from', p.get('from'));
    if (p.get('until')) q.set('until', p.get('until'));
    let d;
    try {
      d = await get('/api/digest?' + q.toString());
    } catch (e) {
      $('digest').textContent = 'The digest could not be computed: ' + e.message;
      return;
    }
    const box = $('digest');
    box.replaceChildren(el('p', 'title', str(d.title)));
    const c = d.current || {};
    const lines = [
      ['commands seen', c.seen], ['allowed at once', c.allowed], ['held for review', c.held],
      ['approved', c.approved], ['denied', c.denied], ['expired', c.expired], ['cancelled', c.cancelled],
    ];
    const ul = el('ul', 'digest-counts');
    for (const [k, v] of lines) ul.append(el('li', null, k + ': ' + (num(v) === null ? '–' : v)));
    box.append(ul);
    const chain = d.chain || {};
    box.append(el('p', 'chain', 'Audit chain head ' + str(chain.head) + (chain.broken ? ' — BROKEN' : ' — intact over the period')));
    const charts = $('charts');
    charts.replaceChildren();
    for (const ch of Array.isArray(d.charts) ? d.charts : []) {
      const img = el('img', 'chart');
      img.alt = str(ch.alt);
      img.src = '/api/digest/charts/' + encodeURIComponent(str(ch.name)) + '?' + q.toString();
      charts.append(img);
    }
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('search').addEventListener('submit', (e) => {
      e.preventDefault();
      search(false);
    });
    $('older').addEventListener('click', () => search(true));
    search(false);
  });
})();
