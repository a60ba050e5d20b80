// A small Markdown renderer for SKILL.md files that builds DOM nodes directly: headings,
// paragraphs, lists, block quotes, rules, fenced code blocks, inline code, bold, italics
// and links. It never produces HTML text, so markup in a skill (a `<script>`, an
// `onerror=` attribute) is shown as the characters it is made of.

import { h } from './dom.js';

// Splits YAML frontmatter (between `---` lines at the very top) from the body.
export function splitFrontmatter(text) {
  const source = String(text ?? '').replace(/\r\n?/g, '\n');
  if (!source.startsWith('---\n')) return { frontmatter: '', body: source };
  const end = source.indexOf('\n---', 4);
  if (end === -1) return { frontmatter: '', body: source };
  const afterFence = source.indexOf('\n', end + 4);
  return {
    frontmatter: source.slice(4, end),
    body: afterFence === -1 ? '' : source.slice(afterFence + 1),
  };
}

// Inline code, **bold**, *italics* and [links](url). Underscores are left alone: in
// skills they are mostly parts of names (`__init__`, `window.__x`), not emphasis.
const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([^*]+?)\*\*|(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])|\[([^\]]+)\]\(([^)\s]+)\)/g;

// Links are kept only when they lead to an ordinary web page; any other scheme (such as
// `javascript:`) is shown as text.
function safeUrl(url) {
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.href : null;
  } catch {
    return null;
  }
}

export function renderInline(text) {
  const nodes = [];
  let last = 0;
  for (const found of text.matchAll(INLINE)) {
    if (found.index > last) nodes.push(document.createTextNode(text.slice(last, found.index)));
    const [whole, , code, strong, em, linkText, linkUrl] = found;
    if (code !== undefined) nodes.push(h('code', { text: code }));
    else if (strong !== undefined) nodes.push(h('strong', {}, renderInline(strong)));
    else if (em !== undefined) nodes.push(h('em', {}, renderInline(em)));
    else if (linkText !== undefined) {
      const url = safeUrl(linkUrl);
      nodes.push(url ? h('a', { href: url, rel: 'noopener noreferrer' }, renderInline(linkText)) : document.createTextNode(whole));
    }
    last = found.index + whole.length;
  }
  if (last < text.length) nodes.push(document.createTextNode(text.slice(last)));
  return nodes;
}

// Renders Markdown into a fragment. Headings are moved one level down (`#` becomes an
// `<h2>`) because the page around them already has its own `<h1>`.
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  const lines = String(text ?? '').replace(/\r\n?/g, '\n').split('\n');
  let paragraph = [];
  let list = null;
  let quote = [];

  const flushParagraph = () => {
    if (paragraph.length) fragment.append(h('p', {}, renderInline(paragraph.join(' '))));
    paragraph = [];
  };
  const flushList = () => {
    if (list) fragment.append(list.element);
    list = null;
  };
  const flushQuote = () => {
    if (quote.length) fragment.append(h('blockquote', {}, h('p', {}, renderInline(quote.join(' ')))));
    quote = [];
  };
  const flushAll = () => {
    flushParagraph();
    flushList();
    flushQuote();
  };

  for (let i = 0; i < lines.length; i += 1) {
    const line = lines[i];
    const fence = line.match(/^\s*(`{3,}|~{3,})\s*([\w+-]*)/);
    if (fence) {
      flushAll();
      const code = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) {
        code.push(lines[i]);
        i += 1;
      }
      const codeElement = h('code', { text: code.join('\n') });
      if (fence[2]) codeElement.dataset.language = fence[2];
      fragment.append(h('pre', { class: 'code-block' }, codeElement));
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*?)\s*#*\s*$/);
    if (heading) {
      flushAll();
      const level = Math.min(heading[1].length + 1, 6);
      fragment.append(h(`h${level}`, {}, renderInline(heading[2])));
      continue;
    }
    if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
      flushAll();
      fragment.append(h('hr'));
      continue;
    }
    const bullet = line.match(/^\s*[-*+]\s+(.*)$/);
    const numbered = line.match(/^\s*(\d+)[.)]\s+(.*)$/);
    if (bullet || numbered) {
      flushParagraph();
      flushQuote();
      const kind = bullet ? 'ul' : 'ol';
      if (!list || list.kind !== kind) {
        flushList();
        list = { kind, element: h(kind) };
        if (numbered && numbered[1] !== '1') list.element.setAttribute('start', numbered[1]);
      }
      list.element.append(h('li', {}, renderInline(bullet ? bullet[1] : numbered[2])));
      continue;
    }
    const quoted = line.match(/^\s*>\s?(.*)$/);
    if (quoted) {
      flushParagraph();
      flushList();
      quote.push(quoted[1]);
      continue;
    }
    if (line.trim() === '') {
      flushAll();
      continue;
    }
    // An indented line right after a list item continues that item.
    if (list && /^\s+\S/.test(line)) {
      const item = list.element.lastElementChild;
      item.append(' ', ...renderInline(line.trim()));
      continue;
    }
    flushList();
    flushQuote();
    paragraph.push(line.trim());
  }
  flushAll();
  return fragment;
}
