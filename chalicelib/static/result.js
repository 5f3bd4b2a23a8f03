// Relais patient result page: vanilla JS, no dependency, no storage, no third party.
// The token is read from the URL fragment, removed from the address bar at once and kept only
// in the `token` variable. Every value from the server is inserted with textContent.
// The script is deferred (parsed document) and runs once; names below are this page's own.
'use strict';
// French static text is read from the HTML by init(); only the dynamic French strings are here.
const FR = {
  selfName: 'Français',
  busy: 'Vérification…',
  errEmpty: 'Indiquez votre date de naissance.',
  errFormat: 'Date non reconnue. Utilisez le format JJ/MM/AAAA, par exemple 03/12/1984.',
  errDate: "Cette date n'est pas possible. Vérifiez le jour, le mois et l'année.",
  errNotFound: "Ce lien n'est pas valide, a expiré, ou la date de naissance ne correspond pas. Vérifiez la date ou demandez un nouveau lien à votre pharmacie.",
  errTooMany: "Trop d'essais, réessayez plus tard.",
  errTooManyIn: "Trop d'essais, réessayez plus tard (dans {n} min environ).",
  errNetwork: "Le résultat n'a pas pu être chargé. Vérifiez votre connexion et réessayez.",
  positive: 'positif',
  negative: 'négatif',
  invalid: 'invalide',
  antigen: 'test antigénique',
  'rt-pcr': 'test RT-PCR',
  parisTime: ' (heure de Paris)'
};
const EN = {
  selfName: 'English',
  docTitle: 'Your COVID-19 test result – Relais',
  title: 'Your COVID-19 test result',
  noTokenTitle: 'Incomplete link',
  noTokenText: 'Open again the full link you received by text message or e-mail, or scan again the code on the paper slip from your pharmacy (or type its full address). For your security, the end of the link is removed from the address bar: after reloading the page, open the link again.',
  intro: 'To protect your data, enter the date of birth given to the pharmacy.',
  label: 'Date of birth',
  hint: 'Format DD/MM/YYYY, for example 03/12/1984',
  placeholder: 'DD/MM/YYYY',
  submit: 'Show my result',
  busy: 'Checking…',
  errEmpty: 'Please enter your date of birth.',
  errFormat: 'Date not recognised. Please use the format DD/MM/YYYY, for example 03/12/1984.',
  errDate: 'This date is not possible. Please check the day, month and year.',
  errNotFound: 'This link is not valid, has expired, or the date of birth does not match. Check the date or ask your pharmacy for a new link.',
  errTooMany: 'Too many attempts, please try again later.',
  errTooManyIn: 'Too many attempts, please try again later (in about {n} min).',
  errNetwork: 'The result could not be loaded. Check your connection and try again.',
  resultLabel: 'Result:',
  correctedLabel: 'This result was corrected by the pharmacy on',
  positive: 'positive',
  negative: 'negative',
  invalid: 'invalid',
  patientLabel: 'Patient',
  kindLabel: 'Test type',
  antigen: 'antigen test',
  'rt-pcr': 'RT-PCR test',
  sampledLabel: 'Sample taken',
  pharmacyLabel: 'Pharmacy',
  parisTime: ' (Paris time)',
  nextTitle: 'What to do now?',
  next1: 'Isolate yourself now and follow current public health guidance.',
  next2: 'Tell the people you have been in close contact with over the last few days.',
  next3: 'See a doctor if your symptoms get worse or if you are at higher risk.',
  next4a: 'In an emergency, call',
  next4b: ' (or text 114 if you are deaf or hard of hearing).',
  invalidText: 'The test could not be read: please take a new test.',
  negativeText: 'A negative test does not fully rule out an infection: if you have symptoms, see a doctor.',
  expiresLabel: 'This link remains valid until',
  closeHint: 'On a shared device, close this page once you have read it.',
  footer: 'Result sent by your pharmacy. This page uses no cookies and no trackers.'
};
const T = { fr: FR, en: EN };
const RESULTS = ['positive', 'negative', 'invalid'];
const INPUT_ERRORS = ['errEmpty', 'errFormat', 'errDate', 'errNotFound'];
const FIELDS = ['result-value', 'patient-name', 'test-kind', 'sampled-at', 'pharmacy-name', 'link-expires'];

let lang = 'fr';
let token = '';
let busy = false;
let shown = null; // last successful answer, kept only to re-render it on a language switch
let errKey = null;
let errArg = '';

const $ = (id) => document.getElementById(id);
const t = (key) => T[lang][key];
const isStr = (v) => typeof v === 'string';
const pad = (n) => String(n).padStart(2, '0');

function readToken() {
  const raw = location.hash.slice(1);
  if (location.href.includes('#')) history.replaceState(null, '', location.pathname + location.search);
  // Tolerate punctuation glued to the end of the link by a mail or SMS client.
  return raw.trim().replace(/[^A-Za-z0-9_=-]+$/, '');
}

function applyLang(next) {
  lang = next;
  const other = lang === 'fr' ? 'en' : 'fr';
  document.documentElement.lang = lang;
  document.title = t('docTitle');
  for (const el of document.querySelectorAll('[data-i18n]')) {
    const s = t(el.dataset.i18n);
    if (s !== undefined) el.textContent = s;
  }
  $('birth-date').placeholder = t('placeholder');
  const label = $('lang-switch').firstElementChild;
  label.lang = other;
  label.textContent = T[other].selfName;
  if (busy) $('submit').textContent = t('busy');
  renderError();
  if (shown) renderResult(shown);
}

function setError(key, arg = '') {
  [errKey, errArg] = [key, arg];
  renderError();
}

function renderError() {
  const input = $('birth-date');
  $('error').textContent = errKey ? t(errKey).replace('{n}', errArg) : '';
  if (INPUT_ERRORS.includes(errKey)) input.setAttribute('aria-invalid', 'true');
  else input.removeAttribute('aria-invalid');
}

// DD/MM/YYYY (also with - . or space, or 8 digits DDMMYYYY) or YYYY-MM-DD -> {value: 'YYYY-MM-DD'} or {err}
function parseBirthDate(raw) {
  const s = raw.trim();
  let y, m, d, x;
  if (!s) return { err: 'errEmpty' };
  if ((x = /^(\d{4})-(\d{1,2})-(\d{1,2})$/.exec(s))) [y, m, d] = [+x[1], +x[2], +x[3]];
  else if ((x = /^(\d{1,2}) *[/.\- ] *(\d{1,2}) *[/.\- ] *(\d{4})$/.exec(s) || /^(\d{2})(\d{2})(\d{4})$/.exec(s))) {
    [d, m, y] = [+x[1], +x[2], +x[3]];
  } else return { err: 'errFormat' };
  const date = new Date(Date.UTC(y, m - 1, d));
  const now = new Date();
  if (date.getUTCFullYear() !== y || date.getUTCMonth() !== m - 1 || date.getUTCDate() !== d ||
      date.getTime() > Date.UTC(now.getFullYear(), now.getMonth(), now.getDate()) ||
      y < now.getFullYear() - 131) {
    return { err: 'errDate' };
  }
  return { value: `${y}-${pad(m)}-${pad(d)}` };
}

function formatDate(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  try {
    return new Intl.DateTimeFormat(lang === 'fr' ? 'fr-FR' : 'en-GB', {
      weekday: 'long', day: 'numeric', month: 'long', year: 'numeric',
      hour: '2-digit', minute: '2-digit', timeZone: 'Europe/Paris'
    }).format(date) + t('parisTime');
  } catch (e) { return iso; }
}

const looksValid = (d) => Boolean(d && d.patient && d.pharmacy && d.test &&
  isStr(d.patient.given_name) && isStr(d.patient.family_name) && isStr(d.pharmacy.name) &&
  isStr(d.test.kind) && isStr(d.test.sampled_at) && RESULTS.includes(d.test.result));

function renderResult(d) {
  const r = d.test.result;
  const known = d.test.kind === 'antigen' || d.test.kind === 'rt-pcr';
  const expires = isStr(d.link_expires_at) ? formatDate(d.link_expires_at) : '';
  $('result').className = `is-${r}`;
  $('result-value').textContent = t(r);
  $('patient-name').textContent = `${d.patient.given_name} ${d.patient.family_name}`.trim();
  $('test-kind').textContent = known ? t(d.test.kind) : d.test.kind;
  $('sampled-at').textContent = formatDate(d.test.sampled_at);
  $('pharmacy-name').textContent = d.pharmacy.name;
  $('link-expires').textContent = expires;
  $('link-expires-line').hidden = !expires;
  const corrected = isStr(d.corrected_at) ? formatDate(d.corrected_at) : '';
  $('corrected-at').textContent = corrected;
  $('corrected-line').hidden = !corrected;
  $('next-steps').hidden = r !== 'positive';
  $('invalid-steps').hidden = r !== 'invalid';
  $('negative-note').hidden = r !== 'negative';
}

function showResult(d) {
  shown = d;
  token = '';
  $('birth-date').value = '';
  $('form').hidden = true;
  renderResult(d);
  $('result').hidden = false;
  $('result-heading').focus();
}

function setBusy(b) {
  busy = b;
  $('submit').disabled = b;
  $('submit').textContent = t(b ? 'busy' : 'submit');
  $('form').setAttribute('aria-busy', String(b));
}

// Retry-After in seconds -> whole minutes ('' when absent or in another form)
const retryMinutes = (h) => (/^\s*\d+\s*$/.test(h || '') && +h > 0 ? String(Math.ceil(h / 60)) : '');

// -> the answer's data on success, else null after showing the matching error
async function ask(birthDate) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 20000);
  try {
    const res = await fetch('/v1/patient/result', {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ token, birth_date: birthDate }),
      credentials: 'omit', cache: 'no-store', referrerPolicy: 'no-referrer', signal: ctl.signal
    });
    if (res.status === 200) {
      const data = await res.json();
      if (looksValid(data)) return data;
      setError('errNetwork');
    } else if (res.status === 404) {
      $('birth-date').value = '';
      setError('errNotFound');
    } else if (res.status === 429) {
      const n = retryMinutes(res.headers.get('Retry-After'));
      setError(n ? 'errTooManyIn' : 'errTooMany', n);
    } else {
      setError('errNetwork');
    }
  } catch (e) {
    setError('errNetwork');
  } finally {
    clearTimeout(timer);
  }
  return null;
}

async function onSubmit(ev) {
  ev.preventDefault();
  if (busy || !token) return;
  const input = $('birth-date');
  const parsed = parseBirthDate(input.value);
  if (parsed.err) {
    setError(parsed.err);
    input.focus();
    return;
  }
  setError(null);
  setBusy(true);
  const data = await ask(parsed.value);
  setBusy(false);
  if (data) showResult(data);
  else input.focus();
}

function start(tk) {
  token = tk;
  shown = null;
  for (const id of FIELDS) $(id).textContent = '';
  $('result').hidden = true;
  setError(null);
  $('birth-date').value = '';
  $('no-token').hidden = Boolean(token);
  $('form').hidden = !token;
}

function init() {
  for (const el of document.querySelectorAll('[data-i18n]')) {
    if (!(el.dataset.i18n in T.fr)) T.fr[el.dataset.i18n] = el.textContent;
  }
  T.fr.docTitle = document.title;
  T.fr.placeholder = $('birth-date').placeholder;
  const sw = $('lang-switch');
  sw.hidden = false;
  sw.addEventListener('click', () => applyLang(lang === 'fr' ? 'en' : 'fr'));
  $('form').addEventListener('submit', onSubmit);
  // A second link opened in the same tab only changes the fragment.
  window.addEventListener('hashchange', () => { const tk = readToken(); if (tk) start(tk); });
  // Leave no result and no token in a page kept by the back/forward cache.
  window.addEventListener('pagehide', (ev) => { if (ev.persisted) start(''); });
  const tk = readToken();
  applyLang('fr');
  start(tk);
}

init(); // the script is deferred: the document is parsed
