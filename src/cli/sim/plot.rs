//! `magnetfetch sim --plot`: a simulation [`Report`] as an SVG with two charts, the
//! completion CDF and the swarm's progress over time. Presentation only; the numbers come
//! from [`crate::sim`].

use crate::sim::Report;

/// One chart of [`report_svg`]: axes, ticks, a step or line series, optional T* marker.
struct Panel<'a> {
    x0: f64,
    title: String,
    xlabel: &'a str,
    tmax: f64,
    points: Vec<(f64, f64)>,
    t_star: Option<f64>,
}

impl Panel<'_> {
    const W: f64 = 460.0;
    const H: f64 = 400.0;
    const M: f64 = 50.0;

    fn draw(&self, s: &mut String) {
        let (w, h, m, x0) = (Self::W, Self::H, Self::M, self.x0);
        let tmax = self.tmax.max(0.001);
        let x = |t: f64| x0 + m + t / tmax * (w - 2.0 * m);
        let y = |f: f64| h - m - f.clamp(0.0, 1.0) * (h - 2.0 * m);
        *s += &format!(
            "<text x=\"{:.1}\" y=\"20\" text-anchor=\"middle\">{}</text>\n\
             <line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\n\
             <line x1=\"{:.1}\" y1=\"{m}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\n",
            x0 + w / 2.0,
            self.title,
            x0 + m,
            h - m,
            x0 + w - m,
            h - m,
            x0 + m,
            x0 + m,
            h - m
        );
        for k in 0..=4 {
            let f = k as f64 / 4.0;
            *s += &format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}%</text>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.1}</text>\n",
                x0 + m - 5.0,
                y(f) + 4.0,
                f * 100.0,
                x(f * tmax),
                h - m + 16.0,
                f * tmax
            );
        }
        *s += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            x0 + w / 2.0,
            h - 10.0,
            self.xlabel
        );
        if let Some(t) = self.t_star {
            *s += &format!(
                "<line x1=\"{0:.1}\" y1=\"{m}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"gray\" stroke-dasharray=\"4\"/>\n<text x=\"{0:.1}\" y=\"{2}\" fill=\"gray\">T*</text>\n",
                x(t),
                h - m,
                m - 5.0
            );
        }
        let pts: Vec<String> = self
            .points
            .iter()
            .map(|&(t, f)| format!("{:.1},{:.1}", x(t), y(f)))
            .collect();
        *s += &format!(
            "<polyline fill=\"none\" stroke=\"steelblue\" stroke-width=\"2\" points=\"{}\"/>\n",
            pts.join(" ")
        );
    }
}

/// An SVG with two charts: the completion CDF (fraction of leechers done against their
/// download time) and the swarm's progress over time (fraction of all leechers' bytes
/// verified, sampled each simulated second), with the fluid bound T* when known.
pub fn report_svg(rep: &Report) -> String {
    let n = rep.leechers.max(1) as f64;
    let last_done = rep.completion_times_s.last().copied().unwrap_or(1.0);
    let tmax = last_done.max(rep.t_star_s.unwrap_or(0.0));
    let mut cdf = vec![(0.0, 0.0)];
    for (i, t) in rep.completion_times_s.iter().enumerate() {
        cdf.push((*t, i as f64 / n));
        cdf.push((*t, (i + 1) as f64 / n));
    }
    let ptmax = rep
        .progress
        .last()
        .map_or(1.0, |p| p[0])
        .max(rep.t_star_s.unwrap_or(0.0));
    let panels = [
        Panel {
            x0: 0.0,
            title: format!(
                "completion CDF: {} of {} leechers, seed {}",
                rep.leechers_completed, rep.leechers, rep.seed
            ),
            xlabel: "simulated seconds from arrival to completion",
            tmax,
            points: cdf,
            t_star: rep.t_star_s,
        },
        Panel {
            x0: Panel::W,
            title: "swarm progress (bytes verified / all wanted)".to_string(),
            xlabel: "simulated seconds since the first leecher arrived",
            tmax: ptmax,
            points: rep.progress.iter().map(|p| (p[0], p[1])).collect(),
            t_star: rep.t_star_s,
        },
    ];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        2.0 * Panel::W,
        Panel::H
    );
    for p in &panels {
        p.draw(&mut s);
    }
    s += "</svg>\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_has_cdf_and_progress() {
        let rep = Report {
            leechers: 2,
            leechers_completed: 2,
            completion_times_s: vec![1.0, 2.0],
            progress: vec![[0.0, 0.0], [1.0, 0.5], [2.0, 1.0]],
            t_star_s: Some(1.5),
            ..Report::default()
        };
        let svg = report_svg(&rep);
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert!(svg.contains("completion CDF") && svg.contains("swarm progress"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
