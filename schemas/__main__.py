from schemas import render_docs

print(render_docs(), end="")
