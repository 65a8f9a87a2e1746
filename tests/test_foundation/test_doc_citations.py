"""Code comments cite the repository's own docs, and those citations resolve.

The reasons behind the code live in ``docs/*.md``; comments and docstrings
cite them as ``docs/<page>.md#<anchor>``. This test fails when a citation of
a document outside the repository (the former design specs, by section sign
or by file name) reappears, when a section sign cites anything but a paper,
and when a cited page or anchor (GitHub's heading slug) does not exist -
including the relative links between the docs pages and the README.
"""
import os
import os.path as osp
import re

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SKIP_DIRS = {
    '.git', '.venv', 'work_dirs', 'build', '__pycache__', '.mim',
    'node_modules', '.eggs', 'data'
}
SUFFIXES = ('.py', '.md', '.yml', '.yaml', '.txt', '.cfg', '.sh', '.rst')
SECTION = '\u00a7'
#: documents that are not part of the repository (split so that this file
#: does not match itself)
OUTSIDE = re.compile('|'.join([
    r'\bspec ' + SECTION, 'spec-' + 'visionllama', 'spec-' + 'llama-adapter',
    'openmmlab-' + 'plugin-guide', 'style-' + 'anchors',
    r'\barchitecture\.' + 'md'
]))
#: what may precede a section sign: a paper (arXiv id, "paper", a table)
PAPER_BEFORE = re.compile(r'(?:arXiv\s+[\w.]+,?|[Pp]aper|Table\s+\d+,?)'
                          r'[ \t]*\(?\s*$')
CITATION = re.compile(r'(?<![\w/.-])((?:docs/[\w-]+|README)\.md)#([\w-]+)')
MD_LINK = re.compile(r'\]\(([^)\s]+?\.md)?#([\w-]+)\)')


def _text_files():
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for name in files:
            path = osp.join(root, name)
            if name.endswith(SUFFIXES) and osp.getsize(path) < 2_000_000:
                yield osp.relpath(path, REPO)


def _read(rel):
    with open(osp.join(REPO, rel), encoding='utf-8', errors='replace') as f:
        return f.read()


def github_slugs(markdown):
    """Anchors GitHub gives the headings of a markdown text."""
    slugs, seen, fence = set(), {}, False
    for line in markdown.split('\n'):
        if line.lstrip().startswith('```'):
            fence = not fence
            continue
        m = re.match(r'(#{1,6})\s+(.*?)\s*#*\s*$', line)
        if fence or m is None:
            continue
        text = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', m.group(2))
        slug = re.sub(r'[^\w\- ]', '', text.strip().lower()).replace(' ', '-')
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        slugs.add(slug if n == 0 else f'{slug}-{n}')
    return slugs


def test_github_slug_rule():
    md = ('# Plain model, DeiT style\n## Checkpoints on torch >= 2.6\n'
          '```\n# not a heading\n```\n## `LN2d` [link](x.md)\n## Variants\n'
          '## Variants\n')
    assert github_slugs(md) == {
        'plain-model-deit-style', 'checkpoints-on-torch--26', 'ln2d-link',
        'variants', 'variants-1'
    }


@pytest.fixture(scope='module')
def texts():
    return {rel: _read(rel) for rel in _text_files()}


def test_no_citation_of_documents_outside_the_repository(texts):
    me = osp.relpath(__file__, REPO)
    bad = [
        f'{rel}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}'
        for rel, text in texts.items() if rel != me
        for m in OUTSIDE.finditer(text)
    ]
    assert not bad, 'cite docs/<page>.md#<anchor> instead:\n' + '\n'.join(bad)


def test_section_signs_cite_papers_only(texts):
    bad = []
    for rel, text in texts.items():
        for m in re.finditer(SECTION, text):
            if not PAPER_BEFORE.search(text[max(0, m.start() - 60):m.start()]):
                line = text.count('\n', 0, m.start()) + 1
                bad.append(f'{rel}:{line}: {text[m.start():m.start() + 30]!r}')
    assert not bad, ('a section sign not preceded by a paper (arXiv id, '
                     '"paper", "Table N"); cite docs/<page>.md#<anchor>:\n' +
                     '\n'.join(bad))


def test_cited_docs_anchors_exist(texts):
    slugs = {}
    cited, bad = 0, []
    for rel, text in texts.items():
        links = [(m, m.group(1)) for m in CITATION.finditer(text)]
        if rel.endswith('.md'):  # relative links of the docs and READMEs
            base = osp.dirname(rel)
            links += [(m, osp.normpath(osp.join(base, m.group(1)))
                       if m.group(1) else rel) for m in MD_LINK.finditer(text)]
        for m, page in links:
            cited += 1
            if page not in slugs:
                full = osp.join(REPO, page)
                slugs[page] = (
                    github_slugs(_read(page)) if osp.isfile(full) else None)
            line = text.count('\n', 0, m.start()) + 1
            if slugs[page] is None:
                bad.append(f'{rel}:{line}: no page {page}')
            elif m.group(2) not in slugs[page]:
                bad.append(f'{rel}:{line}: no section #{m.group(2)} in {page}')
    assert not bad, '\n'.join(bad)
    assert cited > 50  # the code does cite the docs (the pattern matches)


def test_every_docs_page_is_linked_from_the_readme():
    readme = _read('README.md')
    pages = sorted(
        p for p in os.listdir(osp.join(REPO, 'docs')) if p.endswith('.md'))
    assert pages
    missing = [p for p in pages if f'(docs/{p})' not in readme]
    assert not missing, f'docs pages not linked from README.md: {missing}'
